// Package rbac holds the scaler's RBAC manifests; its test renders them.
package rbac

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The scaler may patch pods and nothing else, as its ServiceAccount.
func TestScalerMayOnlyPatchPods(t *testing.T) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), ".")
	require.NoError(t, err)
	kinds := map[string]map[string]any{}
	for _, r := range m.Resources() {
		obj, err := r.Map()
		require.NoError(t, err)
		kinds[r.GetKind()] = obj
	}
	require.Contains(t, kinds, "ServiceAccount")
	assert.Equal(t, "headcount-scaler", kinds["ServiceAccount"]["metadata"].(map[string]any)["name"])

	rules := kinds["ClusterRole"]["rules"].([]any)
	require.Len(t, rules, 1)
	rule := rules[0].(map[string]any)
	assert.Equal(t, []any{""}, rule["apiGroups"])
	assert.Equal(t, []any{"pods"}, rule["resources"])
	assert.Equal(t, []any{"patch"}, rule["verbs"])

	binding := kinds["RoleBinding"]
	assert.Equal(t, kinds["ClusterRole"]["metadata"].(map[string]any)["name"], binding["roleRef"].(map[string]any)["name"])
	subject := binding["subjects"].([]any)[0].(map[string]any)
	assert.Equal(t, "ServiceAccount", subject["kind"])
	assert.Equal(t, "headcount-scaler", subject["name"])
}
