package deploy

import (
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
)

// The NATS the chart installs, run by nats-server itself from the rendered
// arguments, ConfigMap and Secrets: TLS only, no anonymous client, each
// role's certificate mapped to natsauth's permission table for that role
// (its own name a wildcard: the identity is per role, not per pod), and
// every headcount process given its role's certificate.
func TestChartNATSIdentities(t *testing.T) {
	const svc = "hackernews"
	r := decodeChart(t, map[string]any{"service": map[string]any{"name": svc}})
	nw := workloadByRole(t, r, "nats")
	ctr := nw.pod.Spec.Containers[0]
	assert.Equal(t, "nats:"+natsServerVersion(t)+"-alpine", ctr.Image, "the nats-server the tests run")
	require.NotNil(t, ctr.Lifecycle.PreStop.Exec, "lame duck on stop")
	assert.Equal(t, []string{"nats-server", "--signal", "ldm=/var/run/nats/nats.pid"}, ctr.Lifecycle.PreStop.Exec.Command)

	// The mounted files, where the pod mounts them.
	dir := t.TempDir()
	mounted := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		local := filepath.Join(dir, filepath.Base(m.MountPath))
		require.NoError(t, os.MkdirAll(local, 0o700))
		mounted[m.MountPath+"/"] = local + "/"
		for _, v := range nw.pod.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			var data map[string][]byte
			switch {
			case v.ConfigMap != nil:
				data = map[string][]byte{}
				for k, s := range r.configs[v.ConfigMap.Name].Data {
					data[k] = []byte(s)
				}
			case v.Secret != nil:
				require.Contains(t, r.secrets, v.Secret.SecretName)
				data = r.secrets[v.Secret.SecretName].Data
			}
			for k, b := range data {
				require.NoError(t, os.WriteFile(filepath.Join(local, k), b, 0o600))
			}
		}
	}
	var pairs []string
	for k, v := range mounted {
		pairs = append(pairs, k, v)
	}
	paths := strings.NewReplacer(pairs...)
	conf := filepath.Join(mounted["/etc/nats/config/"], "nats.conf")
	raw, err := os.ReadFile(conf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(conf, []byte(paths.Replace(string(raw))), 0o600))
	args := slices.Clone(ctr.Args)
	for i := range args {
		args[i] = paths.Replace(args[i])
	}
	opts, err := server.ConfigureOptions(flag.NewFlagSet("nats-server", flag.ContinueOnError), args, func() {}, func() {}, func() {})
	require.NoError(t, err, "nats-server %v", args)
	require.NotNil(t, opts.TLSConfig, "clients over TLS")
	require.True(t, opts.TLSMap, "identities from client certificates")
	assert.NotZero(t, opts.LameDuckDuration)
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, -1
	opts.PidFile = filepath.Join(dir, "nats.pid")
	srv := natstest.Run(t, opts)

	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}
	want := map[string]natsauth.Identity{
		"member": {Role: natsauth.RoleMember, Service: svc, Name: "x"},
		"router": {Role: natsauth.RoleRouter, Service: svc, Name: "x"},
		"reader": {Role: natsauth.RoleReader},
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	for role, id := range want {
		p, err := natsauth.Permissions(subjects, id)
		require.NoError(t, err)
		u := users["CN=headcount-"+role]
		require.NotNil(t, u, "a user for role %s", role)
		wildcard := func(l jwt.StringList) []string {
			out := []string{}
			for _, s := range l {
				out = append(out, strings.ReplaceAll(s, ".x", ".*"))
			}
			slices.Sort(out)
			return slices.Compact(out)
		}
		sorted := func(l []string) []string { l = slices.Clone(l); slices.Sort(l); return slices.Compact(l) }
		assert.Equal(t, wildcard(p.Pub.Allow), sorted(u.Permissions.Publish.Allow), "%s: publish", role)
		assert.Equal(t, wildcard(p.Sub.Allow), sorted(u.Permissions.Subscribe.Allow), "%s: subscribe", role)
		if p.Resp == nil {
			assert.Nil(t, u.Permissions.Response, "%s: answers no request", role)
		} else if assert.NotNil(t, u.Permissions.Response, "%s: answers requests", role) {
			assert.Equal(t, p.Resp.MaxMsgs, u.Permissions.Response.MaxMsgs, "%s: responses per request", role)
			assert.Equal(t, p.Resp.Expires, u.Permissions.Response.Expires, "%s: response window", role)
		}
	}

	_, err = nats.Connect(srv.ClientURL(), nats.RootCAs(filepath.Join(mounted["/etc/nats/tls/"], "ca.crt")))
	require.Error(t, err, "no certificate, no connection")

	// Each headcount workload connects with its role's certificate.
	roleOf := map[string]string{"leader": "member", "follower": "member", "router": "router", "scaler": "reader"}
	conns := map[string]*nats.Conn{}
	violations := map[string]*natstest.Violations{}
	for _, w := range r.workloads {
		role, ok := roleOf[w.pod.Labels["headcount.dev/role"]]
		if !ok {
			continue
		}
		c := w.pod.Spec.Containers[0]
		env := envOf(c)
		require.NotNil(t, r.secrets[mountedSecret(t, w, c, "/etc/headcount/nats")])
		files := secretFiles(t, r.secrets[mountedSecret(t, w, c, "/etc/headcount/nats")])
		local := func(p string) string { return filepath.Join(files, filepath.Base(p)) }
		client := natsauth.Client{TLSCA: local(env["HEADCOUNT_NATS_TLS_CA"]), TLSCert: local(env["HEADCOUNT_NATS_TLS_CERT"]), TLSKey: local(env["HEADCOUNT_NATS_TLS_KEY"])}
		o, err := client.Options()
		require.NoError(t, err)
		v := &natstest.Violations{}
		// The Service's name, dialled on loopback: TLS verifies the name.
		nc, err := nats.Connect(env["HEADCOUNT_NATS_URL"], append(o, v.Option(), nats.Name(w.name), nats.SetCustomDialer(loopback{srv.Addr().String()}))...)
		require.NoError(t, err, "%s connects as %s", w.name, role)
		t.Cleanup(nc.Close)
		conns[w.pod.Labels["headcount.dev/role"]], violations[w.pod.Labels["headcount.dev/role"]] = nc, v
	}
	require.Len(t, conns, 4)
	heard := natstest.Hear(t, conns["router"], subjects.Watch(svc))
	heard.Arrives(t, conns["follower"], subjects.Report(svc, "hackernews-follower-abc"))
	violations["follower"].Refused(t, conns["follower"], subjects.Placed(svc, "hackernews-follower-abc"))
	violations["scaler"].Refused(t, conns["scaler"], subjects.Report(svc, "x"))
	violations["router"].Refused(t, conns["router"], subjects.Report(svc, "x"))
}

// loopback dials addr whatever the address asked for.
type loopback struct{ addr string }

func (l loopback) Dial(network, _ string) (net.Conn, error) { return net.Dial(network, l.addr) }

// natsServerVersion is the nats-server module this module (and so every
// test) runs.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/nats-io/nats-server/v2").Output()
	require.NoError(t, err)
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
}
