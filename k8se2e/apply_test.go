package k8se2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resource"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const fieldManager = "headcount-k8se2e"

// applier server-side applies objects, learning new kinds (CRDs) as they
// are established.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, c *cluster) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.cfg)
	require.NoError(t, err)
	dc, err := discovery.NewDiscoveryClientForConfig(c.cfg)
	require.NoError(t, err)
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// apply server-side applies obj, waiting (up to a minute) for its kind to be
// served when a CRD was just created.
func (a *applier) apply(t *testing.T, obj *unstructured.Unstructured) {
	t.Helper()
	gvk := obj.GroupVersionKind()
	data, err := json.Marshal(obj)
	require.NoError(t, err)
	var lastErr error
	eventually(t, time.Minute, func() string { return gvk.String() + " " + obj.GetName() + ": " + errString(lastErr) }, func(ctx context.Context) bool {
		m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			a.mapper.Reset()
			lastErr = err
			return false
		}
		require.NoError(t, err)
		_, lastErr = a.resource(m, obj.GetNamespace()).Patch(ctx, obj.GetName(), types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: fieldManager, Force: ptr(true)})
		// A namespace just created may not be visible to admission yet.
		return lastErr == nil || !(apierrors.IsNotFound(lastErr) || apierrors.IsServiceUnavailable(lastErr))
	})
	require.NoError(t, lastErr, "apply %s %s/%s", gvk, obj.GetNamespace(), obj.GetName())
}

// resource is the client of m's resource, in namespace when it is namespaced.
func (a *applier) resource(m *meta.RESTMapping, namespace string) dynamic.ResourceInterface {
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource).Namespace(namespace)
	}
	return a.dyn.Resource(m.Resource)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func ptr[T any](v T) *T { return &v }

// applyOverlay renders deploy/overlays/<name> and applies every object.
func (a *applier) applyOverlay(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	objs := renderOverlay(t, name)
	for _, o := range objs {
		a.apply(t, o)
	}
	return objs
}

// renderOverlay renders deploy/overlays/<name> with the kustomize API,
// Namespaces first.
func renderOverlay(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).
		Run(filesys.MakeFsOnDisk(), filepath.Join("..", "deploy", "overlays", name))
	require.NoError(t, err)
	var objs []*unstructured.Unstructured
	for _, r := range m.Resources() {
		u := unstructuredOf(t, r)
		if u.GetKind() == "Namespace" {
			objs = append([]*unstructured.Unstructured{u}, objs...)
		} else {
			objs = append(objs, u)
		}
	}
	return objs
}

// unstructuredOf is a rendered resource as the API machinery holds objects
// (JSON numbers as int64: kustomize's ints are something DeepCopy refuses).
func unstructuredOf(t *testing.T, r *resource.Resource) *unstructured.Unstructured {
	t.Helper()
	b, err := r.MarshalJSON()
	require.NoError(t, err)
	u := &unstructured.Unstructured{}
	require.NoError(t, u.UnmarshalJSON(b))
	return u
}

// applyFiles applies every object of the YAML files (CRDs from modules).
func (a *applier) applyFiles(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		d := yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(b)), 4096)
		for {
			var obj map[string]any
			if err := d.Decode(&obj); err != nil {
				break
			}
			if obj == nil {
				continue
			}
			a.apply(t, &unstructured.Unstructured{Object: obj})
		}
	}
}

// moduleDir downloads module@version through the Go module proxy (or the
// module cache) and returns its directory.
func moduleDir(t *testing.T, module string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", module).Output()
	require.NoError(t, err, "go mod download %s", module)
	var info struct{ Dir, Error string }
	require.NoError(t, json.Unmarshal(out, &info))
	require.Empty(t, info.Error)
	return info.Dir
}

// The CRDs the overlays' and the chart's non-core objects need, from the
// projects' own modules: KEDA's (the version in go.mod), the Prometheus
// Operator's and cert-manager's.
const (
	promOperator = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
	certManager  = "github.com/cert-manager/cert-manager@v1.19.1"
)

func installCRDs(t *testing.T, a *applier) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2").Output()
	require.NoError(t, err)
	keda := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "bases")
	a.applyFiles(t, filepath.Join(keda, "keda.sh_scaledobjects.yaml"), filepath.Join(keda, "keda.sh_triggerauthentications.yaml"))
	a.applyFiles(t, filepath.Join(moduleDir(t, promOperator), "example", "prometheus-operator-crd",
		"monitoring.coreos.com_servicemonitors.yaml"))
	cm := filepath.Join(moduleDir(t, certManager), "deploy", "crds")
	a.applyFiles(t, filepath.Join(cm, "cert-manager.io_certificates.yaml"), filepath.Join(cm, "cert-manager.io_issuers.yaml"))
}

// Every overlay of deploy/ applies with server-side apply against the real
// API server: its validation, defaulting and admission (RBAC escalation
// checks included), and the KEDA, Prometheus Operator and cert-manager
// CRDs' schemas.
func TestEveryOverlayAppliesServerSide(t *testing.T) {
	c := need(t)
	a := newApplier(t, c)
	installCRDs(t, a)
	overlays, err := filepath.Glob(filepath.Join("..", "deploy", "overlays", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, overlays)
	for _, dir := range overlays {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			objs := a.applyOverlay(t, name)
			// Each object reads back, managed by this apply.
			for _, o := range objs {
				m, err := a.mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
				require.NoError(t, err)
				got, err := a.resource(m, o.GetNamespace()).Get(context.Background(), o.GetName(), metav1.GetOptions{})
				require.NoError(t, err, "%s %s", o.GetKind(), o.GetName())
				require.Contains(t, managers(got), fieldManager)
			}
		})
	}
}

func managers(u *unstructured.Unstructured) []string {
	var out []string
	for _, mf := range u.GetManagedFields() {
		out = append(out, mf.Manager)
	}
	return out
}

// proScaledByHand applies the pro overlay and deletes any follower HPA (the
// hpa overlay's, applied by another test), which would fight a scale made by
// hand.
func proScaledByHand(t *testing.T) (*cluster, *applier) {
	t.Helper()
	c := need(t)
	a := newApplier(t, c)
	installCRDs(t, a)
	a.applyOverlay(t, "pro")
	err := c.client.AutoscalingV2().HorizontalPodAutoscalers(namespace).Delete(context.Background(), follower, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		require.NoError(t, err)
	}
	return c, a
}

// Re-applying the manifests leaves the followers' scale to the autoscaler:
// the Deployment sets no spec.replicas, so server-side apply does not own
// the field and a scale made since (by KEDA, the HPA or here by hand) stays.
func TestReapplyKeepsTheFollowersScale(t *testing.T) {
	c, a := proScaledByHand(t)
	ctx := context.Background()
	scale(t, c, 3)
	a.applyOverlay(t, "pro")
	d, err := c.client.AppsV1().Deployments(namespace).Get(ctx, follower, metav1.GetOptions{})
	require.NoError(t, err)
	require.EqualValues(t, 3, *d.Spec.Replicas)
}
