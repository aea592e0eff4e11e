package k8se2e

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/certtest"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
)

// secureDeploy is what the secure overlay (components/nats-auth) says about
// the auth callout: the NATS server's configuration, the callout's
// container, and the audience the pods' projected tokens are issued for.
type secureDeploy struct {
	objs     []*unstructured.Unstructured
	natsConf string
	callout  corev1.Container
	audience string
}

func renderSecure(t *testing.T) secureDeploy {
	t.Helper()
	d := secureDeploy{objs: renderOverlay(t, "secure")}
	for _, o := range d.objs {
		switch {
		case o.GetKind() == "ConfigMap" && o.GetName() == "nats-config":
			d.natsConf, _, _ = unstructured.NestedString(o.Object, "data", "nats.conf")
		case o.GetKind() == "Deployment" && o.GetName() == "headcount-auth-callout":
			var dep appsv1.Deployment
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &dep))
			d.callout = dep.Spec.Template.Spec.Containers[0]
		case o.GetKind() == "Deployment" && o.GetName() == follower:
			var dep appsv1.Deployment
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &dep))
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Projected != nil {
					for _, src := range v.Projected.Sources {
						if src.ServiceAccountToken != nil {
							d.audience = src.ServiceAccountToken.Audience
						}
					}
				}
			}
		}
	}
	require.NotEmpty(t, d.natsConf, "the nats-config ConfigMap")
	require.NotEmpty(t, d.callout.Args, "the auth callout's container")
	require.NotEmpty(t, d.audience, "the followers' projected token audience")
	return d
}

// calloutNATS is the NATS server of components/nats-auth, embedded: its
// nats.conf with the test's keys and certificates in place of the
// placeholders and Secret mounts, on a random loopback port.
type calloutNATS struct {
	url      string // tls://127.0.0.1:port
	keys     string // the headcount-auth-callout Secret's files (issuer.nk, callout.nk)
	tls      string // the nats-tls Secret's files (tls.crt, tls.key, ca.crt)
	caFile   string
	replacer *strings.Replacer // the pods' paths and addresses to the test's
}

func startCalloutNATS(t *testing.T, conf string) *calloutNATS {
	t.Helper()
	dir := t.TempDir()
	n := &calloutNATS{keys: filepath.Join(dir, "headcount"), tls: filepath.Join(dir, "tls")}
	n.caFile = filepath.Join(n.tls, "ca.crt")
	require.NoError(t, os.MkdirAll(n.keys, 0o700))
	require.NoError(t, os.MkdirAll(n.tls, 0o700))

	keys := natstest.NewCalloutKeys(t)
	for name, kp := range map[string]nkeys.KeyPair{"issuer.nk": keys.Issuer, "callout.nk": keys.User} {
		seed, err := kp.Seed()
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(n.keys, name), seed, 0o600))
	}

	ca, err := certtest.New("nats-ca")
	require.NoError(t, err)
	require.NoError(t, ca.Write(n.tls, "ca.crt", "tls.crt", "tls.key", &x509.Certificate{Subject: pkix.Name{CommonName: "nats.headcount.svc"},
		DNSNames: []string{"nats", "nats.headcount.svc"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))

	for _, placeholder := range []string{"UCALLOUT_PUBLIC_KEY_HERE", "ACALLOUT_ISSUER_PUBLIC_KEY_HERE", "/etc/nats/tls/"} {
		require.Contains(t, conf, placeholder, "nats.conf changed: update this test")
	}
	conf = strings.NewReplacer("UCALLOUT_PUBLIC_KEY_HERE", keys.UserPub, "ACALLOUT_ISSUER_PUBLIC_KEY_HERE", keys.IssuerPub,
		"/etc/nats/tls/", n.tls+"/").Replace(conf)
	confFile := filepath.Join(dir, "nats.conf")
	require.NoError(t, os.WriteFile(confFile, []byte(conf), 0o600))
	opts, err := server.ProcessConfigFile(confFile)
	require.NoError(t, err)
	require.NotNil(t, opts.TLSConfig, "components/nats-auth serves NATS over TLS")
	require.NotNil(t, opts.AuthCallout, "components/nats-auth configures the auth callout")
	s := natstest.Run(t, opts)
	n.url = "tls://" + s.Addr().String()
	n.replacer = strings.NewReplacer("nats://nats:4222", n.url, "/etc/headcount/", n.keys+"/", "/etc/nats/tls/", n.tls+"/")
	return n
}

// runCallout runs the built binary with the callout container's arguments
// and environment from deploy/ (paths and the NATS address made local), as
// the ServiceAccount deploy/ gives it.
func runCallout(t *testing.T, c *cluster, n *calloutNATS, ctr corev1.Container) *proc {
	t.Helper()
	argv := []string{"env"}
	for _, e := range ctr.Env {
		require.Nil(t, e.ValueFrom, "%s: only literal values are mapped here", e.Name)
		argv = append(argv, e.Name+"="+n.replacer.Replace(e.Value))
	}
	argv = append(argv, env.headcount)
	for _, a := range ctr.Args {
		argv = append(argv, n.replacer.Replace(a))
	}
	argv = append(argv, "--kubeconfig", saKubeconfig(t, c, namespace, "headcount-auth-callout"), "--http-addr", "127.0.0.1:0")
	return runHeadcount(t, "auth-callout", argv...)
}

// natsPod is a pod's NATS client, connecting as the pod does: its projected
// token in a file (HEADCOUNT_NATS_TOKEN_FILE) and the CA of the nats-tls
// Secret.
type natsPod struct {
	nc *nats.Conn
	natstest.Violations
}

func (n *calloutNATS) connect(t *testing.T, token string) (*natsPod, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte(token), 0o600))
	opts, err := natsauth.Client{TokenFile: file, TLSCA: n.caFile}.Options()
	require.NoError(t, err)
	p := &natsPod{}
	nc, err := nats.Connect(n.url, append(opts, p.Option(), nats.Timeout(10*time.Second))...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	p.nc = nc
	return p, nil
}

// podToken is a token of ServiceAccount sa bound to pod, for audience ("",
// the API server's own), as the kubelet projects it.
func podToken(t *testing.T, c *cluster, sa string, pod *corev1.Pod, audience string) string {
	t.Helper()
	spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600)),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}
	if audience != "" {
		spec.Audiences = []string{audience}
	}
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	require.NoError(t, err)
	return tr.Status.Token
}

// resign edits a token's claims and signs it again with key (nil keeps the
// original signature: a tampered token).
func resign(t *testing.T, token string, key *rsa.PrivateKey, edit func(claims map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	require.Len(t, parts, 3)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, json.Unmarshal(payload, &claims))
	edit(claims)
	payload, err = json.Marshal(claims)
	require.NoError(t, err)
	signed := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	if key == nil {
		return signed + "." + parts[2]
	}
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	require.NoError(t, err)
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func readRSAKey(t *testing.T, path string) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	blk, _ := pem.Decode(b)
	require.NotNil(t, blk)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	require.NoError(t, err)
	return key
}

// The auth callout for real: the NATS configuration and the callout's
// arguments of components/nats-auth, the built `headcount auth-callout`
// with the RBAC deploy/ grants it, reviewing tokens the API server minted
// for Pod objects (no kubelet: the TokenRequest API binds them as the
// kubelet's projection does). Each pod speaks only as itself; a token of a
// deleted pod, an expired, forged or tampered one, one for another
// audience and another service's ServiceAccount are refused; with the
// callout killed, new connections are refused and existing ones work on.
func TestAuthCalloutAdmitsEachPodAsItself(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	d := renderSecure(t)
	a := newApplier(t, c)
	// The namespace, ServiceAccounts and RBAC of the overlay: no workloads.
	for _, o := range d.objs {
		switch o.GetKind() {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			a.apply(t, o)
		}
	}
	// The adapter's ServiceAccount (deploy/adapter, in the hpa overlay; the
	// callout binds it) and a ServiceAccount of another service, unbound.
	for _, sa := range []string{"headcount-adapter", "web-follower"} {
		_, err := c.client.CoreV1().ServiceAccounts(namespace).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}

	pods := c.client.CoreV1().Pods(namespace)
	mkPod := func(name, sa string) *corev1.Pod {
		t.Helper()
		p, err := pods.Create(ctx, &corev1.Pod{
			// Not the follower Deployment's labels: other tests count those.
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "k8se2e-auth"}},
			Spec: corev1.PodSpec{ServiceAccountName: sa, AutomountServiceAccountToken: ptr(false),
				Containers: []corev1.Container{{Name: "c", Image: "headcount"}}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
		})
		return p
	}
	podA, podB := mkPod("demo-follower-aaaaa", follower), mkPod("demo-follower-bbbbb", follower)
	leaderPod, routerPod := mkPod("demo-leader-lllll", "demo-leader"), mkPod("router-rrrrr", "headcount-router")
	scalerPod, adapterPod := mkPod("headcount-scaler-sssss", "headcount-scaler"), mkPod("headcount-adapter-ddddd", "headcount-adapter")
	gonePod, webPod := mkPod("demo-follower-ggggg", follower), mkPod("web-follower-wwwww", "web-follower")

	n := startCalloutNATS(t, d.natsConf)
	callout := runCallout(t, c, n, d.callout)
	tokenA := podToken(t, c, follower, podA, d.audience)
	var a1 *natsPod
	eventually(t, time.Minute, func() string { return "pod A connects: " + callout.output() }, func(context.Context) bool {
		var err error
		a1, err = n.connect(t, tokenA)
		return err == nil
	})

	// A pod's token passes review until the pod is deleted (checked below).
	goneToken := podToken(t, c, follower, gonePod, d.audience)
	g, err := n.connect(t, goneToken)
	require.NoError(t, err, "the pod's token before its deletion")
	g.nc.Close()
	require.NoError(t, pods.Delete(ctx, gonePod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}))

	_, err = nats.Connect(n.url, nats.Secure(insecureTLS()))
	require.ErrorContains(t, err, "Authorization Violation", "anonymous")

	s := fleet.Subjects{Prefix: fleet.DefaultPrefix}
	scaler, err := n.connect(t, podToken(t, c, "headcount-scaler", scalerPod, d.audience))
	require.NoError(t, err)
	heard := natstest.Hear(t, scaler.nc, s.Watch(""), s.Decision("*"))
	arrives := func(p *natsPod, subject string) {
		t.Helper()
		heard.Arrives(t, p.nc, subject)
	}

	// A follower pod: its own report only.
	arrives(a1, s.Report(service, podA.Name))
	for _, subj := range []string{
		s.Report(service, podB.Name), // the other pod of the same service (or a `gone` for it)
		s.Report("web", podA.Name),   // another service's
		s.Placed(service, podA.Name),
		s.Demand(service, podA.Name),
		s.Decision(service),
		s.RollCall(service),
	} {
		a1.Refused(t, a1.nc, subj)
	}
	b, err := n.connect(t, podToken(t, c, follower, podB, d.audience))
	require.NoError(t, err)
	arrives(b, s.Report(service, podB.Name))
	b.Refused(t, b.nc, s.Report(service, podA.Name))

	// The leader reports as its pod, like a follower.
	leader, err := n.connect(t, podToken(t, c, "demo-leader", leaderPod, d.audience))
	require.NoError(t, err)
	arrives(leader, s.Report(service, leaderPod.Name))
	leader.Refused(t, leader.nc, s.Report(service, "leader"))

	// A router: placements, its own demand and moves, its service's roll call.
	router, err := n.connect(t, podToken(t, c, "headcount-router", routerPod, d.audience))
	require.NoError(t, err)
	arrives(router, s.Placed(service, podA.Name))
	arrives(router, s.Demand(service, routerPod.Name))
	for _, subj := range []string{s.Demand(service, "router-other"), s.Report(service, routerPod.Name),
		s.Placed("web", podA.Name), s.Decision(service)} {
		router.Refused(t, router.nc, subj)
	}

	// The scaler and the adapter watch and call the roll; they say nothing.
	adapter, err := n.connect(t, podToken(t, c, "headcount-adapter", adapterPod, d.audience))
	require.NoError(t, err)
	_, err = adapter.nc.Subscribe(s.Watch(service), func(*nats.Msg) {})
	require.NoError(t, err)
	require.NoError(t, adapter.nc.Publish(s.RollCall(service), nil))
	require.NoError(t, adapter.nc.Flush())
	for _, p := range []*natsPod{scaler, adapter} {
		for _, subj := range []string{s.Report(service, podA.Name), s.Placed(service, podA.Name), s.Demand(service, "x"), s.Decision(service)} {
			p.Refused(t, p.nc, subj)
		}
	}
	// Nothing refused reached the scaler.
	require.NoError(t, scaler.nc.Flush())
	require.Empty(t, heard)

	// Refused at connect.
	refused := func(what, token string) {
		t.Helper()
		_, err := n.connect(t, token)
		require.ErrorContains(t, err, "Authorization Violation", what)
	}
	refused("another service's ServiceAccount", podToken(t, c, "web-follower", webPod, d.audience))
	refused("the API server's audience", podToken(t, c, follower, podA, ""))
	refused("another audience", podToken(t, c, follower, podA, "vault"))
	saKey := readRSAKey(t, filepath.Join(c.dir, "sa.key"))
	refused("expired", resign(t, tokenA, saKey, func(cl map[string]any) {
		past := time.Now().Add(-2 * time.Hour).Unix()
		cl["iat"], cl["nbf"], cl["exp"] = past, past, past+600
	}))
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	refused("signed by another key", resign(t, tokenA, otherKey, func(map[string]any) {}))
	refused("claims of pod B under pod A's signature", resign(t, tokenA, nil, func(cl map[string]any) {
		cl["kubernetes.io"].(map[string]any)["pod"].(map[string]any)["name"] = podB.Name
	}))
	refused("garbage", "not-a-jwt")

	// A deleted pod's token stops passing review (deleted above: the API
	// server may cache a success for a few seconds).
	eventually(t, time.Minute, func() string { return "a deleted pod's token still connects" }, func(context.Context) bool {
		p, err := n.connect(t, goneToken)
		if err == nil {
			p.nc.Close()
		}
		return err != nil && strings.Contains(err.Error(), "Authorization Violation")
	})

	// Fail closed: with the callout killed, nobody new gets in; those
	// connected keep working, on the same connection.
	require.NoError(t, syscall.Kill(-callout.cmd.Process.Pid, syscall.SIGKILL))
	<-callout.done
	// No answer comes: the server gives up on the client (which may first
	// see the server's keep-alive PING where it waits for its PONG).
	_, err = n.connect(t, podToken(t, c, follower, podB, d.audience))
	require.Error(t, err, "pod B with the callout down")
	arrives(a1, s.Report(service, podA.Name))
	arrives(router, s.Placed(service, podB.Name))
	for _, p := range []*natsPod{a1, router, scaler} {
		require.True(t, p.nc.IsConnected())
		require.Zero(t, p.nc.Stats().Reconnects)
	}
}
