package k8se2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// helmConfig is Helm's action configuration against the local API server,
// releases kept in Secrets of namespace.
func helmConfig(t *testing.T, c *cluster, namespace string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &c.kubeconfig
	flags.Namespace = &namespace
	cfg := action.NewConfiguration()
	require.NoError(t, cfg.Init(flags, namespace, "secret"))
	return cfg
}

// ownService is a values file for a service not named demo: its two
// images (behind the light sidecar; the follower's command under the
// supervisor), plan pro.
func ownService(name string) map[string]any {
	return map[string]any{
		"plan": "pro",
		"service": map[string]any{"name": name,
			"leader":   map[string]any{"image": "ghcr.io/example/" + name + "-leader:1.4.0"},
			"follower": map[string]any{"image": "ghcr.io/example/" + name + "-follower:1.4.0", "command": []any{"node"}, "args": []any{"follower.mjs"}}},
	}
}

// helmInstall installs deploy/chart as `helm install --server-side` would
// (Helm v4's default), without waiting for pods (this cluster has no kubelet).
func helmInstall(t *testing.T, c *cluster, namespace, release string, vals map[string]any) *releasev1.Release {
	t.Helper()
	a := newApplier(t, c)
	installCRDs(t, a)
	ch, err := loader.Load(filepath.Join("..", "deploy", "chart"))
	require.NoError(t, err)
	install := action.NewInstall(helmConfig(t, c, namespace))
	install.ReleaseName, install.Namespace, install.CreateNamespace = release, namespace, true
	install.ServerSideApply = true
	install.WaitStrategy = kube.HookOnlyStrategy
	install.Timeout = 2 * time.Minute
	// The CRDs' kinds are served before Helm maps the chart's objects.
	for _, gvk := range []schema.GroupVersionKind{
		{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"},
		{Group: "keda.sh", Version: "v1alpha1", Kind: "TriggerAuthentication"},
		{Group: "cert-manager.io", Version: "v1", Kind: "Issuer"},
		{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"},
	} {
		var err error
		eventually(t, time.Minute, func() string { return gvk.Kind + ": " + errString(err) }, func(context.Context) bool {
			a.mapper.Reset()
			_, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			return err == nil
		})
	}
	rel, err := install.Run(ch, vals)
	require.NoError(t, err)
	return rel.(*releasev1.Release)
}

// manifestObjects are the objects of a release's manifest.
func manifestObjects(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	d := yaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := d.Decode(&obj); err != nil {
			return objs
		}
		if obj != nil {
			objs = append(objs, &unstructured.Unstructured{Object: obj})
		}
	}
}

// `helm install` of the chart for a service not named demo, plan pro,
// applies server-side against the real API server (its validation, the
// KEDA CRDs' schemas, RBAC and admission): every object reads back, applied
// by Helm's field manager. An upgrade keeps the CA every client trusts.
func TestChartInstallsServerSide(t *testing.T) {
	c := need(t)
	const ns = "streams"
	rel := helmInstall(t, c, ns, "hackernews", ownService("hackernews"))
	kinds := appliedKinds(t, c, ns, rel)
	for _, k := range []string{"Deployment", "ScaledObject", "TriggerAuthentication", "ValidatingAdmissionPolicy", "NetworkPolicy", "Secret"} {
		assert.True(t, kinds[k], "a %s", k)
	}

	ctx := context.Background()
	caBefore, err := c.client.CoreV1().Secrets(ns).Get(ctx, "hackernews-ca", metav1.GetOptions{})
	require.NoError(t, err)
	ch, err := loader.Load(filepath.Join("..", "deploy", "chart"))
	require.NoError(t, err)
	up := action.NewUpgrade(helmConfig(t, c, ns))
	up.Namespace, up.ServerSideApply, up.WaitStrategy = ns, "true", kube.HookOnlyStrategy
	_, err = up.Run("hackernews", ch, ownService("hackernews"))
	require.NoError(t, err)
	caAfter, err := c.client.CoreV1().Secrets(ns).Get(ctx, "hackernews-ca", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, caBefore.Data, caAfter.Data, "the upgrade keeps the CA")
	scalerTLS, err := c.client.CoreV1().Secrets(ns).Get(ctx, "hackernews-scaler-tls", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, caBefore.Data["tls.crt"], scalerTLS.Data["ca.crt"], "certificates after the upgrade are signed by it")
}

// The chart with tls.source certManager installs too: its Issuers and
// Certificates pass cert-manager's CRD schemas (no cert-manager runs, so
// nothing issues them here; deploy's tests issue what they describe).
func TestChartWithCertManagerInstallsServerSide(t *testing.T) {
	c := need(t)
	const ns = "quotes"
	vals := ownService("quotes")
	vals["tls"] = map[string]any{"source": "certManager"}
	kinds := appliedKinds(t, c, ns, helmInstall(t, c, ns, "quotes", vals))
	for _, k := range []string{"Issuer", "Certificate", "TriggerAuthentication"} {
		assert.True(t, kinds[k], "a %s", k)
	}
}

// The chart with tracing on installs too: the OTEL_* env (the pod's own
// fields among it) of the demo's processes and the egress rule to the
// collector pass the API server's validation and read back as rendered.
func TestChartWithTracingInstallsServerSide(t *testing.T) {
	c := need(t)
	const ns, svc = "traced", "traced"
	vals := map[string]any{"service": map[string]any{"name": svc}, "tracing": map[string]any{
		"otlpEndpoint": "http://otel-collector.observability:4317",
		"collector":    map[string]any{"podLabels": map[string]any{"app.kubernetes.io/name": "opentelemetry-collector"}}}}
	appliedKinds(t, c, ns, helmInstall(t, c, ns, svc, vals))
	ctx := context.Background()
	for _, name := range []string{svc + "-router", svc + "-scaler", svc + "-leader", svc + "-follower"} {
		d, err := c.client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		env := map[string]corev1.EnvVar{}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			env[e.Name] = e
		}
		assert.Equal(t, "http://otel-collector.observability:4317", env["OTEL_EXPORTER_OTLP_ENDPOINT"].Value, name)
		assert.Equal(t, "spec.nodeName", env["OTEL_RESOURCE_ATTRIBUTES_NODE_NAME"].ValueFrom.FieldRef.FieldPath, name)
	}
	np, err := c.client.NetworkingV1().NetworkPolicies(ns).Get(ctx, svc+"-router", metav1.GetOptions{})
	require.NoError(t, err)
	toCollector := false
	for _, e := range np.Spec.Egress {
		for _, peer := range e.To {
			toCollector = toCollector || (peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "observability" &&
				peer.PodSelector != nil && len(e.Ports) == 1 && e.Ports[0].Port.IntValue() == 4317)
		}
	}
	assert.True(t, toCollector, "the router's egress to the collector's pods on 4317")
}

// appliedKinds checks that every object of rel reads back applied
// server-side, none named demo, and returns their kinds.
func appliedKinds(t *testing.T, c *cluster, ns string, rel *releasev1.Release) map[string]bool {
	t.Helper()
	a := newApplier(t, c)
	objs := manifestObjects(t, rel.Manifest)
	require.NotEmpty(t, objs)
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.GetKind()] = true
		assert.NotContains(t, o.GetName(), "demo")
		m, err := a.mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
		require.NoError(t, err)
		namespace := o.GetNamespace()
		if m.Scope.Name() == "namespace" && namespace == "" {
			namespace = ns
		}
		got, err := a.resource(m, namespace).Get(context.Background(), o.GetName(), metav1.GetOptions{})
		require.NoError(t, err, "%s %s", o.GetKind(), o.GetName())
		applied := false
		for _, f := range got.GetManagedFields() {
			applied = applied || f.Operation == metav1.ManagedFieldsOperationApply
		}
		assert.True(t, applied, "%s %s: applied server-side", o.GetKind(), o.GetName())
	}
	return kinds
}

// The ValidatingAdmissionPolicy, on the real API server: the scaler's
// ServiceAccount (which RBAC lets patch pods) may set a follower's
// deletion-cost annotation and is refused a label, another annotation or
// a spec change; anyone else is not affected.
func TestChartAdmissionPolicyNarrowsTheScalersPatches(t *testing.T) {
	c := need(t)
	const ns, svc = "costs", "search"
	helmInstall(t, c, ns, svc, ownService(svc))
	checkScalersPatchesNarrowed(t, c, ns, svc+"-scaler", svc+"-follower")
}

// The overlays' policy (deploy/rbac) does the same for their scaler.
func TestOverlayAdmissionPolicyNarrowsTheScalersPatches(t *testing.T) {
	c := need(t)
	a := newApplier(t, c)
	installCRDs(t, a)
	a.applyOverlay(t, "pro")
	checkScalersPatchesNarrowed(t, c, namespace, "headcount-scaler", "")
}

// checkScalersPatchesNarrowed creates a follower pod in ns (under
// ServiceAccount podSA, if any) and patches it as ServiceAccount scalerSA:
// only the deletion-cost annotation goes through; the admin's label patch
// does too.
func checkScalersPatchesNarrowed(t *testing.T, c *cluster, ns, scalerSA, podSA string) {
	t.Helper()
	ctx := context.Background()
	pod, err := c.client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "admission-k8se2e-", Labels: map[string]string{"headcount.dev/role": "follower"}},
		Spec: corev1.PodSpec{ServiceAccountName: podSA, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "follower", Image: "ghcr.io/example/follower:1.4.0"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = c.client.CoreV1().Pods(ns).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	})

	as := rest.CopyConfig(c.cfg)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + scalerSA}
	scaler, err := kubernetes.NewForConfig(as)
	require.NoError(t, err)
	patch := func(client kubernetes.Interface, body string) error {
		_, err := client.CoreV1().Pods(ns).Patch(ctx, pod.Name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	// The policy is enforced once the API server has loaded it; until then
	// a label patch goes through, so each try changes the label anew.
	var lastErr error
	tries := 0
	eventually(t, time.Minute, func() string { return "label patch not refused: " + errString(lastErr) }, func(context.Context) bool {
		tries++
		lastErr = patch(scaler, fmt.Sprintf(`{"metadata":{"labels":{"headcount.dev/role":"router-%d"}}}`, tries))
		return lastErr != nil && strings.Contains(lastErr.Error(), "may not change a pod's labels")
	})
	require.NoError(t, patch(scaler, `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"42"}}}`), "the deletion cost")
	got, err := c.client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "42", got.Annotations["controller.kubernetes.io/pod-deletion-cost"])
	assert.ErrorContains(t, patch(scaler, `{"metadata":{"annotations":{"prometheus.io/scrape":"false"}}}`), "only the pod-deletion-cost annotation")
	assert.ErrorContains(t, patch(scaler, `{"spec":{"activeDeadlineSeconds":5}}`), "spec")
	assert.Error(t, patch(scaler, `{"metadata":{"labels":{"headcount.dev/role":null}}}`), "nor remove one")
	require.NoError(t, patch(c.client, `{"metadata":{"labels":{"headcount.dev/role":"follower"}}}`), "the policy binds the scaler only")
}
