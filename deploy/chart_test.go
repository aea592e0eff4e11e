package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const chartNamespace = "streams"

// renderChart is `helm template` of deploy/chart with vals, through Helm
// v4's install action in client-only dry-run mode.
func renderChart(t *testing.T, vals map[string]any) string {
	t.Helper()
	m, err := renderChartErr(vals)
	require.NoError(t, err)
	return m
}

func renderChartErr(vals map[string]any) (string, error) {
	ch, err := loader.Load("chart")
	if err != nil {
		return "", err
	}
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = "hc"
	install.Namespace = chartNamespace
	install.Replace = true
	// The version of the API server k8se2e runs (client-go's).
	if install.KubeVersion, err = common.ParseKubeVersion("v1.37.0"); err != nil {
		return "", err
	}
	rel, err := install.Run(ch, vals)
	if err != nil {
		return "", err
	}
	r, ok := rel.(*releasev1.Release)
	if !ok {
		return "", errors.New("not a v1 release")
	}
	return r.Manifest, nil
}

// chartDocs splits a manifest into its YAML documents.
func chartDocs(t *testing.T, manifest string) [][]byte {
	t.Helper()
	rd := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewBufferString(manifest)))
	var docs [][]byte
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}

func decodeChart(t *testing.T, vals map[string]any) rendered {
	t.Helper()
	return decodeDocs(t, "chart", chartDocs(t, renderChart(t, vals)))
}

// chartInstalls are the installs every chart check runs over: the default
// (KEDA, the demo), your own service behind the sidecar on another plan,
// the adapter and a plain HPA, an existing NATS, cert-manager.
var chartInstalls = map[string]map[string]any{
	"default": nil,
	"own service, enterprise": {
		"plan": "enterprise",
		"service": map[string]any{"name": "hackernews",
			"leader":   map[string]any{"image": "ghcr.io/example/hackernews-leader:1.4.0", "args": []any{"leader.mjs"}},
			"follower": map[string]any{"image": "ghcr.io/example/hackernews-follower:1.4.0", "command": []any{"node"}, "args": []any{"follower.mjs"}}},
		"gateway": map[string]any{"enabled": true, "parentRefs": []any{map[string]any{"name": "public"}}},
	},
	"hpa": {"autoscaler": "hpa", "plan": "starter"},
	"existing NATS": {"nats": map[string]any{"install": false, "url": "tls://nats.messaging:4222", "caSecret": "nats-ca",
		"credentials": map[string]any{"router": "hc-router-creds", "member": "hc-member-creds", "reader": "hc-reader-creds"}}},
	"cert-manager": {"tls": map[string]any{"source": "certManager"}, "autoscaler": "hpa"},
}

func forEachInstall(t *testing.T, check func(t *testing.T, vals map[string]any, r rendered)) {
	for name, vals := range chartInstalls {
		t.Run(name, func(t *testing.T) { check(t, vals, decodeChart(t, vals)) })
	}
}

// Every check the overlays pass, the chart's renderings pass too.
func TestChartIsHardened(t *testing.T) {
	forEachInstall(t, func(t *testing.T, _ map[string]any, r rendered) { checkHardened(t, r) })
}

// The chart's name is the service's: a service not named demo leaves no
// "demo" behind.
func TestChartNamesYourService(t *testing.T) {
	m := renderChart(t, chartInstalls["own service, enterprise"])
	// Certificates are base64: random letters, not names.
	m = regexp.MustCompile(`(?m)^\s*(tls\.crt|tls\.key|ca\.crt|caBundle): .*$`).ReplaceAllString(m, "")
	assert.NotContains(t, m, "demo")
	assert.Contains(t, m, "--service\", \"hackernews\"")
	_, err := renderChartErr(map[string]any{"service": map[string]any{"name": "Not_A_Label"}})
	assert.ErrorContains(t, err, "DNS-1123")
	_, err = renderChartErr(map[string]any{"image": map[string]any{"tag": "latest"}})
	assert.ErrorContains(t, err, "never latest")
}
