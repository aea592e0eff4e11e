package k8se2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/headcount-dev/headcount/internal/certtest"
	"github.com/headcount-dev/headcount/scaler/deletioncost"
)

// The KEDA binaries k8se2e/build-keda.sh builds into HEADCOUNT_KEDA_BIN, as
// KEDA's Makefile names them.
const (
	kedaOperator = "keda"
	kedaWebhooks = "keda-admission-webhooks"
	kedaAdapter  = "keda-adapter"
	kedaNS       = "keda"
)

var (
	scaledObjects = schema.GroupVersionResource{Group: "keda.sh", Version: "v1alpha1", Resource: "scaledobjects"}
	kedaWarm      = "run `task e2e:keda` (bash k8se2e/build-keda.sh, then k8se2e/run.sh) as root to build KEDA into .cache/keda: about 48 minutes cold on two cores, seconds warm"
)

// skipKEDA skips t when KEDA is not built, loudly; it fails instead under
// HEADCOUNT_KEDA_REQUIRE=1 (.ci/run sets it as root when .cache/keda is
// warm). HEADCOUNT_K8S_REQUIRE alone does not make a missing KEDA a failure:
// a cold CI does not build it.
func skipKEDA(t *testing.T, reason string) {
	t.Helper()
	msg := "\n*** SKIPPED (KEDA): " + reason + " ***\n*** " + kedaWarm + " ***"
	if os.Getenv("HEADCOUNT_KEDA_REQUIRE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// needKEDA is the control plane, the network namespace and the KEDA
// binaries, or a skip that says which is missing.
func needKEDA(t *testing.T) *cluster {
	t.Helper()
	if env.kedaBin == "" {
		skipKEDA(t, env.kedaReason)
	}
	if env.cluster == nil {
		skipKEDA(t, env.reason)
	}
	if env.ns == nil {
		skipKEDA(t, env.nsReason)
	}
	return need(t)
}

// kedaBinDir checks HEADCOUNT_KEDA_BIN: "" and why when KEDA is not built.
func kedaBinDir() (string, string) {
	bin := os.Getenv("HEADCOUNT_KEDA_BIN")
	if bin == "" {
		return "", "HEADCOUNT_KEDA_BIN is not set (k8se2e/run.sh sets it when .cache/keda/bin holds KEDA)"
	}
	for _, b := range []string{kedaOperator, kedaWebhooks, kedaAdapter} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return "", fmt.Sprintf("%s: %v", b, err)
		}
	}
	return bin, ""
}

// pod runs one container's command line the way a kubelet runs a pod with
// restartPolicy Always: when the process exits it is started again (KEDA's
// operator exits on purpose once it has written its certificates, for its
// pod to be restarted with them mounted).
type pod struct {
	name     string
	mu       sync.Mutex
	cur      *proc
	runs     []*proc // cur and those before it
	restarts int
	stopc    chan struct{}
	done     chan struct{}
}

func runPod(t *testing.T, dir, name string, env []string, argv ...string) *pod {
	t.Helper()
	first, err := startEnv(dir, name, env, argv...)
	require.NoError(t, err)
	p := &pod{name: name, cur: first, runs: []*proc{first}, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			p.mu.Lock()
			cur := p.cur
			p.mu.Unlock()
			select {
			case <-p.stopc:
				return
			case <-cur.done:
			}
			select {
			case <-p.stopc:
				return
			case <-time.After(time.Second):
			}
			p.mu.Lock()
			p.restarts++
			next, err := startEnv(dir, fmt.Sprintf("%s-%d", name, p.restarts), env, argv...)
			if err == nil {
				p.cur = next
				p.runs = append(p.runs, next)
			}
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(p.stopc)
		<-p.done
		p.mu.Lock()
		cur := p.cur
		p.mu.Unlock()
		cur.stop()
		if t.Failed() {
			t.Logf("%s's log (%d restarts):\n%s", name, p.restarts, cur.output())
		}
	})
	return p
}

// logged tells whether any run of the process wrote s.
func (p *pod) logged(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.runs {
		r.mu.Lock()
		found := strings.Contains(r.log.String(), s)
		r.mu.Unlock()
		if found {
			return true
		}
	}
	return false
}

func (p *pod) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("(%d restarts) %s", p.restarts, p.cur.output())
}

// mountSecret plays the kubelet's secret volume: every key of Secret
// ns/name is written into dir (each file replaced whole, as the kubelet's
// atomic writer does) and kept current until t ends.
func mountSecret(t *testing.T, c *cluster, ns, name, dir string) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if s, err := c.client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{}); err == nil {
				for k, v := range s.Data {
					path := filepath.Join(dir, k)
					if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, v) {
						continue
					}
					if os.WriteFile(path+".tmp", v, 0o600) == nil {
						_ = os.Rename(path+".tmp", path)
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
}

// container is the command line and environment of the first container of
// a Deployment as rendered, for a pod named pod: its command (the image's
// binary replaced by bin) or, without one, bin and its args, each argument
// through arg (the paths of mounted volumes and the ports that differ here)
// after the kubelet's $(VAR) expansion, and its env with the pod's name and
// namespace resolved.
func container(t *testing.T, d *unstructured.Unstructured, bin, pod string, arg func(string) string) (argv, envv []string) {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	require.NoError(t, err)
	require.NotEmpty(t, cs, d.GetName())
	c := cs[0].(map[string]any)
	cmd, _, _ := unstructured.NestedStringSlice(c, "command")
	args, _, _ := unstructured.NestedStringSlice(c, "args")
	if len(cmd) > 1 {
		args = append(cmd[1:], args...)
	}
	var vars []string
	envs, _, _ := unstructured.NestedSlice(c, "env")
	for _, e := range envs {
		m := e.(map[string]any)
		name := m["name"].(string)
		v, ok := m["value"].(string)
		if !ok {
			switch path, _, _ := unstructured.NestedString(m, "valueFrom", "fieldRef", "fieldPath"); path {
			case "metadata.namespace":
				v = d.GetNamespace()
			case "metadata.name":
				v = pod
			default:
				t.Fatalf("env %s of %s: %v", name, d.GetName(), m["valueFrom"])
			}
		}
		envv = append(envv, name+"="+v)
		vars = append(vars, "$("+name+")", v)
	}
	expand := strings.NewReplacer(vars...)
	argv = []string{bin}
	for _, a := range args {
		argv = append(argv, arg(expand.Replace(a)))
	}
	return argv, envv
}

// renderKEDA renders KEDA's own kustomize tree (config/default of the KEDA
// module in go.mod: its CRDs, namespace, RBAC, Deployments, Services,
// APIService and ValidatingWebhookConfiguration), Namespaces and CRDs first.
func renderKEDA(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2").Output()
	require.NoError(t, err)
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).
		Run(filesys.MakeFsOnDisk(), filepath.Join(strings.TrimSpace(string(out)), "config", "default"))
	require.NoError(t, err)
	var first, rest []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		require.NoError(t, err)
		u := &unstructured.Unstructured{Object: obj}
		if k := u.GetKind(); k == "Namespace" || k == "CustomResourceDefinition" {
			first = append(first, u)
		} else {
			rest = append(rest, u)
		}
	}
	return append(first, rest...)
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// kedaEnv is KEDA and headcount's scaler running against the control plane
// for one test: what a user has after installing KEDA's release manifests and
// applying an overlay of deploy/.
type kedaEnv struct {
	top     *testing.T // TestKEDA, whose end stops everything
	c       *cluster
	a       *applier
	natsURL string
	overlay []*unstructured.Unstructured // overlays/pro as rendered
	dir     string

	operator, webhooks, adapter *pod
	scalerArgv                  func(ip string) (argv, envv []string)
	scalers                     []*proc
	killScalers                 func()
	kubelet                     *kubelet
}

// startKEDA installs KEDA's manifests and runs its three processes in the
// network namespace, where the API server must call the webhooks and the
// metrics server at a non-loopback address; it applies overlays/pro and
// runs one `headcount scaler` with the arguments of the overlay's scaler
// Deployment, and NATS.
//
// What is played here that a cluster would provide: the kubelet (the
// processes run with their Deployment's command line and environment,
// restarted when they exit; KEDA's certificate Secret is written into the
// directory they read as their mounted volume), cluster DNS (a hosts file
// for the namespace: `ip netns exec` mounts /etc/netns/<name>/hosts),
// the endpoints controller (EndpointSlices naming the namespace's address)
// and cert-manager (the overlay's Certificates issued into their Secrets).
func startKEDA(t *testing.T) *kedaEnv {
	c := needKEDA(t)
	ctx := context.Background()
	a := newApplier(t, c)
	// Another test's HPA on the followers (overlays/hpa) would make KEDA's
	// webhook refuse the ScaledObject, rightly: one autoscaler per workload.
	err := c.client.AutoscalingV2().HorizontalPodAutoscalers(namespace).Delete(ctx, follower, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		require.NoError(t, err)
	}

	k := &kedaEnv{top: t, c: c, a: a, dir: t.TempDir()}
	keda := renderKEDA(t)
	for _, o := range keda {
		if o.GetKind() != "Deployment" {
			a.apply(t, o)
		}
	}
	for svc, port := range map[string]int32{"keda-metrics-apiserver": 6443, "keda-admission-webhooks": 9443} {
		_, err := c.client.DiscoveryV1().EndpointSlices(kedaNS).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svc + "-k8se2e", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{env.ns.nsIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("https"), Port: ptr(port)}},
		}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}

	// Cluster DNS for the namespace: the operator dials the scaler by the
	// ScaledObject's scalerAddress, the metrics server the operator's gRPC
	// service by its default address; each name resolves to where that
	// process listens.
	scaler := []string{"headcount-scaler.headcount.svc", "headcount-scaler.headcount.svc.cluster.local"}
	require.NoError(t, env.ns.setHosts(map[string][]string{
		env.ns.nsIP: append([]string{"keda-operator.keda.svc.cluster.local", "keda-operator.keda.svc"}, scaler...),
		c.host:      scaler,
	}))

	installCRDs(t, a)
	k.overlay = a.applyOverlay(t, "pro")
	k.natsURL = startNATS(t, c.host)
	k.scalerArgv = k.scalerCommand(t, k.issueCertificates(t))
	k.killScalers = k.startScalers(t)

	// KEDA, as its Deployments run it, with the token of its ServiceAccount.
	kubeconfig := saKubeconfig(t, c, kedaNS, "keda-operator")
	certs := filepath.Join(k.dir, "certs")
	require.NoError(t, os.MkdirAll(certs, 0o700))
	mountSecret(t, c, kedaNS, "kedaorg-certs", certs)
	volume := func(a string) string { return strings.ReplaceAll(a, "=/certs", "="+certs) }
	run := func(deploy, bin string, extra ...string) *pod {
		d := find(keda, "Deployment", deploy)
		require.NotNil(t, d, "KEDA's Deployment %s", deploy)
		argv, envv := container(t, d, filepath.Join(env.kedaBin, bin), deploy+"-k8se2e", volume)
		envv = append(envv, "KUBECONFIG="+kubeconfig)
		return runPod(t, k.dir, bin, envv, env.ns.exec(append(argv, extra...)...)...)
	}
	// The Secret volume's mount path is /certs, the operator's and the
	// webhooks' default --cert-dir. The three share one network namespace
	// here, each its own pod in a cluster: the webhooks' and the metrics
	// server's own metrics and probe ports move off the operator's.
	k.operator = run("keda-operator", kedaOperator, "--cert-dir="+certs)
	eventually(t, 3*time.Minute, func() string { return "KEDA's certificates in its Secret; operator: " + k.operator.output() },
		func(context.Context) bool {
			_, err := os.Stat(filepath.Join(certs, "tls.crt"))
			return err == nil
		})
	k.webhooks = run("keda-admission", kedaWebhooks, "--cert-dir="+certs,
		"--metrics-bind-address=:8090", "--health-probe-bind-address=:8091")
	k.adapter = run("keda-metrics-apiserver", kedaAdapter, "--port=8092",
		"--authentication-kubeconfig="+kubeconfig, "--authorization-kubeconfig="+kubeconfig)

	// The operator injects its CA into the APIService; the aggregator then
	// verifies the metrics server with it.
	waitAPIService(t, c, a, "v1beta1.external.metrics.k8s.io", func() string {
		return "\noperator: " + k.operator.output() + "\nmetrics server: " + k.adapter.output()
	})
	return k
}

// issueCertificates plays cert-manager for the overlay: each Certificate
// issued by the overlay's CA Issuer (the scaler's, KEDA's client
// certificate) is issued as it describes (DNS names, common name, usage)
// from one CA and stored in its Secret (ca.crt, tls.crt, tls.key). It
// returns the directory of the scaler's, where its volume would be.
func (k *kedaEnv) issueCertificates(t *testing.T) string {
	t.Helper()
	ca, err := certtest.New("headcount CA")
	require.NoError(t, err)
	var scalerDir string
	for _, o := range k.overlay {
		if o.GetKind() != "Certificate" {
			continue
		}
		if isCA, _, _ := unstructured.NestedBool(o.Object, "spec", "isCA"); isCA {
			continue
		}
		secret, _, _ := unstructured.NestedString(o.Object, "spec", "secretName")
		cn, _, _ := unstructured.NestedString(o.Object, "spec", "commonName")
		dns, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "dnsNames")
		usages, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "usages")
		tmpl, err := certtest.Described(cn, dns, usages)
		require.NoError(t, err, "Certificate %s", o.GetName())
		dir := filepath.Join(k.dir, secret)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		require.NoError(t, ca.Write(dir, "ca.crt", "tls.crt", "tls.key", tmpl))
		data := map[string][]byte{}
		for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
			data[f], err = os.ReadFile(filepath.Join(dir, f))
			require.NoError(t, err)
		}
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: o.GetNamespace()},
			Type: corev1.SecretTypeTLS, Data: data}
		secrets := k.c.client.CoreV1().Secrets(o.GetNamespace())
		if _, err := secrets.Create(context.Background(), s, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			_, err = secrets.Update(context.Background(), s, metav1.UpdateOptions{})
			require.NoError(t, err)
		} else {
			require.NoError(t, err)
		}
		if secret == "headcount-scaler-tls" {
			scalerDir = dir
		}
	}
	require.NotEmpty(t, scalerDir, "the overlay's scaler Certificate")
	return scalerDir
}

// scalerCommand is the scaler's command line from the overlay's
// Deployment for a replica at ip: its TLS files from the directory of its
// Secret, its gRPC port at ip (where the namespace's DNS sends
// headcount-scaler.headcount.svc), NATS here, and the token of its
// ServiceAccount for --deletion-cost (in a pod: in-cluster).
func (k *kedaEnv) scalerCommand(t *testing.T, tlsDir string) func(ip string) (argv, envv []string) {
	d := find(k.overlay, "Deployment", "headcount-scaler")
	require.NotNil(t, d)
	kubeconfig := saKubeconfig(t, k.c, namespace, "headcount-scaler")
	return func(ip string) ([]string, []string) {
		argv, envv := container(t, d, env.headcount, "headcount-scaler-"+ip, func(a string) string {
			switch a {
			case ":9090":
				return net.JoinHostPort(ip, "9090")
			case ":9091":
				return net.JoinHostPort(ip, "0")
			}
			return strings.ReplaceAll(a, "/etc/headcount/tls", tlsDir)
		})
		return append(argv, "--kubeconfig", kubeconfig), append(envv, "HEADCOUNT_NATS_URL="+k.natsURL)
	}
}

// startScalers starts the overlay's two scaler replicas, one on each side
// of the veth (both answer at port 9090 of their address, as two pods),
// and returns a function that kills them with SIGKILL.
func (k *kedaEnv) startScalers(t *testing.T) (kill func()) {
	t.Helper()
	var ps []*proc
	for i, ip := range []string{k.c.host, env.ns.nsIP} {
		argv, envv := k.scalerArgv(ip)
		if ip == env.ns.nsIP {
			argv = env.ns.exec(argv...)
		}
		p, err := startEnv(t.TempDir(), fmt.Sprintf("scaler-%d", i), envv, argv...)
		require.NoError(t, err)
		// Until TestKEDA ends: the fallback subtest restarts them for the rest.
		k.top.Cleanup(func() {
			p.stop()
			if k.top.Failed() {
				k.top.Logf("scaler %d's log:\n%s", i, p.output())
			}
		})
		ps = append(ps, p)
	}
	k.scalers = ps
	return func() {
		for _, p := range ps {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

// scaledObjectOf is the ScaledObject (and its TriggerAuthentication) of
// overlay name as rendered.
func scaledObjectOf(t *testing.T, name string) (so, auth *unstructured.Unstructured) {
	t.Helper()
	for _, o := range renderOverlay(t, name) {
		switch o.GetKind() {
		case "ScaledObject":
			so = o
		case "TriggerAuthentication":
			auth = o
		}
	}
	return so, auth
}

// condition is the status and message of condition typ of a ScaledObject.
func condition(u *unstructured.Unstructured, typ string) (status, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, x := range conds {
		m := x.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			msg, _ := m["message"].(string)
			r, _ := m["reason"].(string)
			return s, r + ": " + msg
		}
	}
	return "", ""
}

// applyScaledObject server-side applies so (dry run: nothing is stored) and
// returns the API server's answer.
func (k *kedaEnv) applyScaledObject(ctx context.Context, so *unstructured.Unstructured, dryRun bool) error {
	data, err := json.Marshal(so)
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: ptr(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = k.a.dyn.Resource(scaledObjects).Namespace(namespace).Patch(ctx, so.GetName(), "application/apply-patch+yaml", data, opts)
	return err
}

// TestKEDA runs the real KEDA (operator, admission webhooks, metrics server)
// on the overlays' ScaledObject against the local control plane, with real
// `headcount scaler` processes and agents reporting as the followers' pods.
// One KEDA for all the subtests, in order; each leaves the ScaledObject of
// overlays/pro in place.
func TestKEDA(t *testing.T) {
	k := startKEDA(t)
	nc, err := nats.Connect(k.natsURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	k.kubelet = startKubelet(t, k.c, nc)
	t.Run("WebhookJudgesTheOverlays", k.webhookJudgesTheOverlays)
	t.Run("ScalesTheFollowers", k.scalesTheFollowers)
	t.Run("Fallback", k.fallback)
	t.Run("ScalesToZero", k.scalesToZero)
	t.Run("ScalesFromZero", k.scalesFromZero)
}

// Every overlay's ScaledObject passes KEDA's validating webhook and becomes
// Ready (the operator dialled the scaler with the TriggerAuthentication's
// mutual TLS and got its metric spec); one with minReplicaCount above
// maxReplicaCount is refused by the webhook; one with a bad
// targetInstancesPerReplica passes the webhook (KEDA does not know the
// external scaler's metadata) and is reported Ready False on the
// ScaledObject, the scaler's InvalidArgument text in the operator's log.
func (k *kedaEnv) webhookJudgesTheOverlays(t *testing.T) {
	ctx := context.Background()
	pro, _ := scaledObjectOf(t, "pro")

	// The webhook's failurePolicy is Ignore (KEDA's manifests): until the
	// API server reaches it, everything passes. Tried until refused, as a
	// dry run so that nothing is stored.
	bad := pro.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(bad.Object, int64(5), "spec", "minReplicaCount"))
	require.NoError(t, unstructured.SetNestedField(bad.Object, int64(2), "spec", "maxReplicaCount"))
	var last error
	eventually(t, 2*time.Minute, func() string {
		return "the webhook refusing min 5 > max 2: " + errString(last) + "\nwebhooks: " + k.webhooks.output()
	}, func(ctx context.Context) bool {
		last = k.applyScaledObject(ctx, bad, true)
		return last != nil
	})
	require.Contains(t, last.Error(), `admission webhook "vscaledobject.kb.io" denied the request`)
	require.Contains(t, last.Error(), "MinReplicaCount=5 must be less than MaxReplicaCount=2")
	t.Logf("refused: %v", last)

	overlays, err := filepath.Glob(filepath.Join("..", "deploy", "overlays", "*"))
	require.NoError(t, err)
	judged := 0
	for _, dir := range overlays {
		name := filepath.Base(dir)
		so, auth := scaledObjectOf(t, name)
		if so == nil {
			continue // overlays/hpa: no KEDA
		}
		require.NotNil(t, auth, name)
		k.a.apply(t, auth)
		require.NoError(t, k.applyScaledObject(ctx, so, false), "overlay %s", name)
		var st, msg string
		eventually(t, 2*time.Minute, func() string {
			return fmt.Sprintf("overlay %s: Ready %s %s\noperator: %s", name, st, msg, k.operator.output())
		}, func(ctx context.Context) bool {
			u, err := k.a.dyn.Resource(scaledObjects).Namespace(namespace).Get(ctx, so.GetName(), metav1.GetOptions{})
			if err != nil {
				return false
			}
			// Ready for this generation: the operator saw the overlay's spec.
			observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
			st, msg = condition(u, "Ready")
			return st == "True" && (observed == 0 || observed == u.GetGeneration())
		})
		judged++
		t.Logf("overlay %s: accepted, Ready (%s)", name, msg)
	}
	require.GreaterOrEqual(t, judged, 4, "the plans' overlays at least")

	// A bad target passes the webhook (KEDA cannot know an external
	// scaler's metadata); the scaler refuses it with InvalidArgument. KEDA
	// v2.21 drops that error's text (its external scaler's
	// GetMetricSpecForScaling logs it and returns no spec): the ScaledObject
	// says Ready False, "no metric specs returned from scalers", and the
	// scaler's text is in the operator's log.
	badTarget := pro.DeepCopy()
	triggers, _, _ := unstructured.NestedSlice(badTarget.Object, "spec", "triggers")
	require.NoError(t, unstructured.SetNestedField(triggers[0].(map[string]any), "0", "metadata", "targetInstancesPerReplica"))
	require.NoError(t, unstructured.SetNestedSlice(badTarget.Object, triggers, "spec", "triggers"))
	require.NoError(t, k.applyScaledObject(ctx, badTarget, false))
	const invalid = "code = InvalidArgument desc = metadata targetInstancesPerReplica="
	var st, msg string
	eventually(t, 2*time.Minute, func() string {
		return fmt.Sprintf("the bad target reported: Ready %s %s\noperator: %s", st, msg, k.operator.output())
	}, func(ctx context.Context) bool {
		u, err := k.a.dyn.Resource(scaledObjects).Namespace(namespace).Get(ctx, badTarget.GetName(), metav1.GetOptions{})
		if err != nil {
			return false
		}
		st, msg = condition(u, "Ready")
		return st == "False" && strings.Contains(msg, "no metric specs returned from scalers") && k.operator.logged(invalid)
	})
	t.Logf("bad target: Ready False (%s); the operator logged the scaler's %q", msg, invalid)
	require.NoError(t, k.applyScaledObject(ctx, pro, false))
}

// kedaHPA is the HPA KEDA made for the ScaledObject of the overlays.
const kedaHPA = "keda-hpa-" + follower

// withShortWindows is so with the test's stabilization windows and
// policies (those of TestHPAScalesOnTheAdaptersMetric; the overlays' are
// production's, minutes long).
func withShortWindows(t *testing.T, so *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	so = so.DeepCopy()
	behavior := map[string]any{
		"scaleUp": map[string]any{"stabilizationWindowSeconds": int64(0),
			"policies": []any{map[string]any{"type": "Percent", "value": int64(1000), "periodSeconds": int64(1)}}},
		"scaleDown": map[string]any{"stabilizationWindowSeconds": int64(3),
			"policies": []any{map[string]any{"type": "Percent", "value": int64(100), "periodSeconds": int64(1)}}},
	}
	require.NoError(t, unstructured.SetNestedMap(so.Object, behavior, "spec", "advanced", "horizontalPodAutoscalerConfig", "behavior"))
	return so
}

func (k *kedaEnv) replicas(t *testing.T) int32 {
	t.Helper()
	d, err := k.c.client.AppsV1().Deployments(namespace).Get(context.Background(), follower, metav1.GetOptions{})
	require.NoError(t, err)
	return *d.Spec.Replicas
}

// hpaState describes KEDA's HPA (for failure messages).
func (k *kedaEnv) hpaState(ctx context.Context) string {
	h, err := k.c.client.AutoscalingV2().HorizontalPodAutoscalers(namespace).Get(ctx, kedaHPA, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	s := hpaStatus(h)
	for _, m := range h.Status.CurrentMetrics {
		if m.External != nil {
			s += "; current " + m.External.Metric.Name + "=" + m.External.Current.AverageValue.String()
		}
	}
	return s
}

// KEDA creates its HPA for overlays/pro (the plan's bounds, the trigger's
// target as an AverageValue external metric); the real HPA controller reads
// headcount's value through KEDA's metrics server (the aggregator, the
// metrics server, the operator's gRPC service, the scaler over mutual TLS)
// and moves the follower Deployment to what replicas/ predicts: 350 live
// instances reported by an agent → 4, then 120 → 2.
func (k *kedaEnv) scalesTheFollowers(t *testing.T) {
	ctx := context.Background()
	so, _ := scaledObjectOf(t, "pro")
	require.NoError(t, k.applyScaledObject(ctx, withShortWindows(t, so), false))

	hpas := k.c.client.AutoscalingV2().HorizontalPodAutoscalers(namespace)
	var why string
	eventually(t, 2*time.Minute, func() string {
		return "KEDA's HPA with the short windows: " + why + "\noperator: " + k.operator.output()
	},
		func(ctx context.Context) bool {
			h, err := hpas.Get(ctx, kedaHPA, metav1.GetOptions{})
			if err != nil {
				why = err.Error()
				return false
			}
			why = fmt.Sprintf("behavior %+v", h.Spec.Behavior)
			return h.Spec.Behavior != nil && h.Spec.Behavior.ScaleDown != nil &&
				h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds != nil && *h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds == 3
		})
	h, err := hpas.Get(ctx, kedaHPA, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, follower, h.Spec.ScaleTargetRef.Name)
	require.EqualValues(t, 1, *h.Spec.MinReplicas, "plan pro's minimum")
	require.EqualValues(t, 10, h.Spec.MaxReplicas, "plan pro's maximum")
	require.Len(t, h.Spec.Metrics, 1)
	m := h.Spec.Metrics[0]
	require.NotNil(t, m.External, "KEDA's external metric")
	require.Equal(t, "AverageValue", string(m.External.Target.Type))
	target := m.External.Target.AverageValue.AsApproximateFloat64()
	require.EqualValues(t, 100, target, "the trigger's targetInstancesPerReplica")
	t.Logf("KEDA's HPA %s: %d–%d replicas on %s, AverageValue %v", kedaHPA, *h.Spec.MinReplicas, h.Spec.MaxReplicas, m.External.Metric.Name, target)

	kl := k.kubelet
	pods := waitPods(t, k.c, 1)
	first := pods[0].Name

	policy := pro().Policy(target, false)
	expect := func(live int64, step string) {
		t.Helper()
		want := int32(policy.Desired(int64(k.replicas(t)), live))
		var got int32
		var state string
		eventually(t, 2*time.Minute, func() string {
			return fmt.Sprintf("%s: spec.replicas %d, want %d (replicas/ for %d live); KEDA's HPA: %s; kubelet: %s\nmetrics server: %s",
				step, got, want, live, state, kl.errors(), k.adapter.output())
		}, func(ctx context.Context) bool {
			k.c.check(t)
			got = k.replicas(t)
			state = k.hpaState(ctx)
			return got == want
		})
		t.Logf("%s: %d live instances → %d replicas (%s)", step, live, got, state)
	}
	kl.set(t, first, 350)
	expect(350, "up")

	// Down to 120 with the instances on the two newest followers: the
	// scaler's deletion cost (the overlay runs it with --deletion-cost) makes
	// the ReplicaSet controller remove the two emptiest, where its default
	// would remove the newest. The 350 move first (the total, and so the
	// scale, unchanged) until the annotations say where they are; then the
	// oldest's 230 go.
	pods = waitPods(t, k.c, 4)
	counts := map[string]int64{pods[0].Name: 230, pods[1].Name: 0, pods[2].Name: 60, pods[3].Name: 60}
	for name, n := range counts {
		kl.set(t, name, n)
	}
	waitDeletionCosts(t, k.c, counts)
	kl.set(t, first, 0)
	expect(120, "down")
	left := waitPods(t, k.c, 2)
	require.ElementsMatch(t, []string{pods[2].Name, pods[3].Name}, podNames(left),
		"KEDA's scale-down removed the two emptiest followers, the oldest")
}

// waitDeletionCosts waits for the scaler to annotate each pod of counts
// with its live instances.
func waitDeletionCosts(t *testing.T, c *cluster, counts map[string]int64) {
	t.Helper()
	var seen map[string]string
	eventually(t, time.Minute, func() string { return fmt.Sprintf("deletion costs %v, want %v", seen, counts) },
		func(ctx context.Context) bool {
			seen = map[string]string{}
			list, err := livePods(ctx, c)
			if err != nil {
				return false
			}
			ok := true
			for _, p := range list {
				seen[p.Name] = p.Annotations[deletioncost.Annotation]
				if want, in := counts[p.Name]; in && seen[p.Name] != strconv.FormatInt(want, 10) {
					ok = false
				}
			}
			return ok
		})
}

// scaledObject reads the ScaledObject of the overlays.
func (k *kedaEnv) scaledObject(ctx context.Context) (*unstructured.Unstructured, error) {
	return k.a.dyn.Resource(scaledObjects).Namespace(namespace).Get(ctx, follower, metav1.GetOptions{})
}

// setLive spreads live instances over the live follower pods: all on the
// first, none on the others.
func (k *kedaEnv) setLive(t *testing.T, live int64) {
	t.Helper()
	pods, err := livePods(context.Background(), k.c)
	require.NoError(t, err)
	require.NotEmpty(t, pods)
	for i, p := range pods {
		n := int64(0)
		if i == 0 {
			n = live
		}
		k.kubelet.set(t, p.Name, n)
	}
}

// With every scaler replica killed (SIGKILL), KEDA's reads of the metric
// fail; after more than the overlay's failureThreshold (3) in a row KEDA
// serves the fallback instead (currentReplicasIfHigher: the current
// replica count) and sets the ScaledObject's Fallback condition. The
// follower Deployment keeps its replicas all along, although the live
// instances change meanwhile (no scale on nothing, none to zero). When the
// scalers are back, KEDA serves the live value again: 350 → 4.
func (k *kedaEnv) fallback(t *testing.T) {
	ctx := context.Background()
	before := k.replicas(t)
	require.NotZero(t, before)
	k.killScalers()
	killed := time.Now()
	var st, msg, health string
	moved := map[int32]bool{}
	watchReplicas := func() {
		if r := k.replicas(t); r != before {
			moved[r] = true
		}
	}
	eventually(t, 3*time.Minute, func() string {
		return fmt.Sprintf("Fallback %s %s; health %s; HPA %s\noperator: %s", st, msg, health, k.hpaState(ctx), k.operator.output())
	}, func(ctx context.Context) bool {
		k.c.check(t)
		watchReplicas()
		u, err := k.scaledObject(ctx)
		if err != nil {
			return false
		}
		h, _, _ := unstructured.NestedMap(u.Object, "status", "health")
		health = fmt.Sprint(h)
		st, msg = condition(u, "Fallback")
		return st == "True"
	})
	fellBack := time.Since(killed)
	t.Logf("scalers killed: fallback after %s (%s; health %s)", fellBack.Round(100*time.Millisecond), msg, health)

	// The instances change while no scaler sees them; KEDA's HPA keeps
	// reading the fallback (ScalingActive) and holds the replicas.
	k.setLive(t, 350)
	hold := time.Now().Add(15 * time.Second)
	for time.Now().Before(hold) {
		k.c.check(t)
		watchReplicas()
		time.Sleep(250 * time.Millisecond)
	}
	require.Empty(t, moved, "spec.replicas stayed %d during the fallback", before)
	h, err := k.c.client.AutoscalingV2().HorizontalPodAutoscalers(namespace).Get(ctx, kedaHPA, metav1.GetOptions{})
	require.NoError(t, err)
	for _, c := range h.Status.Conditions {
		if c.Type == "ScalingActive" {
			require.Equal(t, corev1.ConditionTrue, c.Status, "the HPA reads KEDA's fallback value: %s", c.Message)
		}
	}

	k.killScalers = k.startScalers(t)
	back := time.Now()
	var got int32
	eventually(t, 3*time.Minute, func() string {
		return fmt.Sprintf("after the scalers' return: spec.replicas %d, want 4; Fallback %s %s; HPA %s", got, st, msg, k.hpaState(ctx))
	}, func(ctx context.Context) bool {
		got = k.replicas(t)
		if u, err := k.scaledObject(ctx); err == nil {
			st, msg = condition(u, "Fallback")
		}
		return got == 4 && st == "False"
	})
	t.Logf("scalers back: the live value (350 → 4 replicas) after %s, Fallback False", time.Since(back).Round(100*time.Millisecond))
}

// withZero is so as a plan that allows zero would have it:
// minReplicaCount 0, the test's short cooldownPeriod, and KEDA's default
// pollingInterval (30 s), so that only the push can scale from zero fast.
func withZero(t *testing.T, so *unstructured.Unstructured, cooldown int64) *unstructured.Unstructured {
	t.Helper()
	so = withShortWindows(t, so)
	require.NoError(t, unstructured.SetNestedField(so.Object, int64(0), "spec", "minReplicaCount"))
	require.NoError(t, unstructured.SetNestedField(so.Object, cooldown, "spec", "cooldownPeriod"))
	require.NoError(t, unstructured.SetNestedField(so.Object, int64(30), "spec", "pollingInterval"))
	return so
}

const zeroCooldown = 10 // seconds

// Scale to zero: with minReplicaCount 0, once the instances are gone KEDA
// scales the followers to zero, and not before cooldownPeriod.
func (k *kedaEnv) scalesToZero(t *testing.T) {
	ctx := context.Background()
	so, _ := scaledObjectOf(t, "pro")
	require.NoError(t, k.applyScaledObject(ctx, withZero(t, so, zeroCooldown), false))
	require.NotZero(t, k.replicas(t))
	k.setLive(t, 0)
	gone := time.Now()
	var got int32
	eventually(t, 3*time.Minute, func() string {
		return fmt.Sprintf("to zero: spec.replicas %d; HPA %s\noperator: %s", got, k.hpaState(ctx), k.operator.output())
	}, func(ctx context.Context) bool {
		k.c.check(t)
		got = k.replicas(t)
		return got == 0
	})
	took := time.Since(gone)
	t.Logf("instances gone → spec.replicas 0 after %s (cooldownPeriod %d s)", took.Round(100*time.Millisecond), zeroCooldown)
	require.GreaterOrEqual(t, took, zeroCooldown*time.Second-time.Second, "not before the cooldown")
}

// Scale from zero with external-push: a creation held by a real router
// (the overlay's router Deployment's command line) makes the scaler push
// "active" on KEDA's StreamIsActive, and KEDA's push loop turns the follower
// Deployment 0 → 1 at once, long before its 30 s polling interval; the
// ScaledObject's Active condition, once True, stays True while the creation
// waits, and the router places it on the new follower.
func (k *kedaEnv) scalesFromZero(t *testing.T) {
	ctx := context.Background()
	require.Zero(t, k.replicas(t), "at zero (the previous step)")
	d := find(k.overlay, "Deployment", "router")
	require.NotNil(t, d)
	port, err := freePort(k.c.host)
	require.NoError(t, err)
	control := net.JoinHostPort(k.c.host, fmt.Sprint(port))
	argv, envv := container(t, d, env.headcount, "router-k8se2e", func(a string) string { return a })
	argv = append(argv, "--control-addr", control, "--streaming-addr", net.JoinHostPort(k.c.host, "0"))
	router, err := startEnv(t.TempDir(), "router", append(envv, "HEADCOUNT_NATS_URL="+k.natsURL), argv...)
	require.NoError(t, err)
	t.Cleanup(func() {
		router.stop()
		if t.Failed() {
			t.Logf("router's log:\n%s", router.output())
		}
	})
	require.NoError(t, waitHTTP(router, "http://"+control+"/healthz", nil, time.Minute))

	// spec.replicas is watched, each change timed as it arrives.
	w, err := k.c.client.AppsV1().Deployments(namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + follower})
	require.NoError(t, err)
	defer w.Stop()
	scaled := make(chan time.Time, 1)
	go func() {
		for ev := range w.ResultChan() {
			if dep, ok := ev.Object.(*appsv1.Deployment); ok && dep.Spec.Replicas != nil && *dep.Spec.Replicas >= 1 {
				scaled <- time.Now()
				return
			}
		}
	}()

	// The creation, held by the router until a follower is ready.
	held := time.Now()
	created := make(chan string, 1)
	go func() {
		resp, err := http.Post("http://"+control+"/v1/streams/k8se2e-from-zero", "application/json", strings.NewReader("{}"))
		if err != nil {
			created <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		created <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()

	var at time.Time
	var activeTrue, activeFalseAfter bool
	var answer string
	deadline := time.After(3 * time.Minute)
	for answer == "" {
		select {
		case at = <-scaled:
		case answer = <-created:
		case <-deadline:
			t.Fatalf("no answer to the held creation; spec.replicas %d; HPA %s\nrouter: %s\noperator: %s",
				k.replicas(t), k.hpaState(ctx), router.output(), k.operator.output())
		case <-time.After(100 * time.Millisecond):
			if u, err := k.scaledObject(ctx); err == nil {
				switch s, _ := condition(u, "Active"); {
				case s == "True":
					activeTrue = true
				case activeTrue:
					activeFalseAfter = true
				}
			}
		}
	}
	require.True(t, strings.HasPrefix(answer, "201 "), "the held creation, placed on the new follower: %s", answer)
	require.False(t, at.IsZero(), "spec.replicas went to 1")
	took := at.Sub(held)
	t.Logf("held creation → spec.replicas 1 in %s (goal ≤ 2 s; pollingInterval 30 s); creation answered %s", took.Round(10*time.Millisecond), answer)
	require.True(t, activeTrue, "the Active condition went True")
	require.False(t, activeFalseAfter, "the Active condition stayed True while the creation waited")
	require.Less(t, took, 15*time.Second, "the push, not the 30 s poll, scaled from zero")
}
