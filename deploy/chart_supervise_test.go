package deploy

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// A follower of your own runs under the supervisor (headcount-sidecar
// supervise), which an init container copies into its container from the
// sidecar image: it starts the follower once the leader Service's
// healthcheck answers and restarts it in place after a leader restart, so
// the kubelet never sees it exit (no CrashLoopBackOff). Its liveness and
// startup probes ask the supervisor, which stays alive while it waits; its
// readiness stays the follower's own. The leader is not supervised.
func TestChartSupervisesYourFollowers(t *testing.T) {
	vals := chartInstalls["own service, enterprise"]
	r := decodeChart(t, vals)
	pod := func(name string) corev1.PodSpec {
		i := slices.IndexFunc(r.workloads, func(w workload) bool { return w.name == name })
		require.GreaterOrEqual(t, i, 0, name)
		return r.workloads[i].pod.Spec
	}
	spec := pod("hackernews-follower")
	require.Len(t, spec.InitContainers, 1)
	init := spec.InitContainers[0]
	sidecar := spec.Containers[slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == "sidecar" })]
	assert.Equal(t, sidecar.Image, init.Image, "the sidecar image carries the supervisor")
	require.Equal(t, []string{"supervise", "--copy-to", "/headcount"}, init.Args)
	app := spec.Containers[slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == "hackernews" })]
	require.GreaterOrEqual(t, len(app.Command), 3)
	assert.Equal(t, []string{"/headcount/headcount-sidecar", "supervise"}, app.Command[:2], "the copied binary runs the follower")
	assert.Equal(t, []string{"--", "node"}, app.Command[len(app.Command)-2:], "then the follower's own command")
	assert.Equal(t, []string{"follower.mjs"}, app.Args, "and its args")
	flags := map[string]string{}
	for i := 2; i+1 < len(app.Command) && app.Command[i] != "--"; i += 2 {
		flags[app.Command[i]] = app.Command[i+1]
	}
	assert.Equal(t, "http://hackernews-leader:8081/v1/healthcheck", flags["--leader-health"], "the leader Service's control port, through its sidecar")
	leader := r.services["hackernews-leader"]
	require.NotNil(t, leader)
	assert.True(t, slices.ContainsFunc(leader.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 8081 && p.TargetPort.StrVal == "control" }))
	assert.Equal(t, "http://127.0.0.1:18081/v1/healthcheck", flags["--child-health"], "the follower's own healthcheck")
	assert.Equal(t, ":9092", flags["--health-addr"])
	port, ok := containerPort(app, "supervisor")
	require.True(t, ok)
	assert.EqualValues(t, 9092, port.ContainerPort)
	for name, p := range map[string]*corev1.Probe{"startup": app.StartupProbe, "liveness": app.LivenessProbe} {
		require.NotNil(t, p, name)
		assert.Equal(t, "/healthz", p.HTTPGet.Path, "%s probe: the supervisor, alive while the leader is away", name)
		assert.Equal(t, "supervisor", p.HTTPGet.Port.StrVal, name)
	}
	assert.Equal(t, "up-control", app.ReadinessProbe.HTTPGet.Port.StrVal, "readiness is the follower's own")
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range app.VolumeMounts {
		mounts[m.Name] = m
	}
	assert.Equal(t, corev1.VolumeMount{Name: "supervisor", MountPath: "/headcount", ReadOnly: true}, mounts["supervisor"])
	assert.Equal(t, "/headcount", init.VolumeMounts[0].MountPath)
	vol := spec.Volumes[slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "supervisor" })]
	assert.NotNil(t, vol.EmptyDir)

	assert.Empty(t, pod("hackernews-leader").InitContainers, "the leader exits for nobody: not supervised")

	// Off: your command is the container's own, probed as before.
	off := maps.Clone(vals)
	off["service"] = map[string]any{"name": "hackernews",
		"leader":   map[string]any{"image": "ghcr.io/example/hackernews-leader:1.4.0", "args": []any{"leader.mjs"}},
		"follower": map[string]any{"image": "ghcr.io/example/hackernews-follower:1.4.0", "supervise": false, "args": []any{"follower.mjs"}}}
	r = decodeChart(t, off)
	spec = pod("hackernews-follower")
	assert.Empty(t, spec.InitContainers)
	for _, c := range spec.Containers {
		assert.Empty(t, c.Command, c.Name)
	}

	// On without a command: refused, saying why.
	missing := maps.Clone(vals)
	missing["service"] = map[string]any{"name": "hackernews",
		"follower": map[string]any{"image": "ghcr.io/example/hackernews-follower:1.4.0", "args": []any{"follower.mjs"}}}
	_, err := renderChartErr(missing)
	assert.ErrorContains(t, err, "service.follower.command is required")
}
