// Package deploy holds the Kubernetes manifests; its test renders every
// overlay with the kustomize API and checks them against the code.
package deploy

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/headcount-dev/headcount/replicas"
)

func render(t *testing.T, dir string) resmap.ResMap {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, dir)
	return m
}

func TestEveryPlanOverlayRendersWithThePlanBounds(t *testing.T) {
	for _, plan := range replicas.Plans {
		t.Run(plan.Name, func(t *testing.T) {
			m := render(t, filepath.Join("overlays", plan.Name))
			kinds := map[string]int{}
			var spec map[string]any
			for _, r := range m.Resources() {
				kinds[r.GetKind()]++
				if r.GetKind() == "ScaledObject" {
					obj, err := r.Map()
					require.NoError(t, err)
					spec = obj["spec"].(map[string]any)
				}
			}
			for _, kind := range []string{"Deployment", "Service", "ScaledObject", "NetworkPolicy", "ServiceAccount"} {
				require.NotZero(t, kinds[kind], "a %s", kind)
			}
			require.EqualValues(t, plan.Min, spec["minReplicaCount"])
			if plan.Max > 0 {
				require.EqualValues(t, plan.Max, spec["maxReplicaCount"])
			}
			trigger := spec["triggers"].([]any)[0].(map[string]any)
			require.Equal(t, "external-push", trigger["type"])
			meta := trigger["metadata"].(map[string]any)
			for _, k := range []string{"scalerAddress", "service", "targetInstancesPerReplica"} {
				require.NotEmpty(t, meta[k], k)
			}
		})
	}
}

// Every headcount container's arguments, in every overlay, must parse: a
// renamed flag breaks this test, not a cluster.
func TestContainerArgumentsAreFlagsTheBinaryKnows(t *testing.T) {
	bins := binaries(t)
	checked := map[string]bool{}
	check := func(what string, r rendered) {
		for _, w := range r.workloads {
			for _, c := range w.pod.Spec.Containers {
				name := filepath.Base(strings.SplitN(c.Image, ":", 2)[0])
				bin, args := bins[name], slices.Clone(c.Args)
				if name == "headcount-sidecar" && bin == "" {
					// Until cmd/headcount-sidecar is in this tree: its flags are `headcount sidecar`'s.
					bin, args = bins["headcount"], append([]string{"sidecar"}, args...)
				}
				if !strings.HasPrefix(name, "headcount") || bin == "" {
					continue
				}
				out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
				require.NoError(t, err, "%s %s %v: %s", what, w.name, c.Args, out)
				checked[what+" "+w.pod.Labels["headcount.dev/role"]+" "+name] = true
			}
		}
	}
	for _, dir := range overlays(t) {
		check("overlay", decode(t, dir))
	}
	for name, vals := range chartInstalls {
		check("chart", decodeChart(t, vals))
		t.Log("chart install checked:", name)
	}
	for _, want := range []string{"overlay leader headcount", "overlay follower headcount", "overlay router headcount",
		"overlay scaler headcount", "overlay adapter headcount-adapter", "chart leader headcount", "chart follower headcount",
		"chart router headcount", "chart scaler headcount", "chart adapter headcount-adapter",
		"chart leader headcount-sidecar", "chart follower headcount-sidecar"} {
		require.True(t, checked[want], want)
	}
}
