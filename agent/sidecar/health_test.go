package sidecar_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/ops"
)

// Kubernetes' probe semantics: a healthcheck slower than the period but
// within the timeout passes (a loaded machine answers late), failures below
// the threshold are tolerated, the threshold-th in a row takes the follower
// out, one success brings it back, and a refused connection takes it out
// at the first check that meets it.
func TestHealthHoldsUnderLoadAndFailsAtTheThreshold(t *testing.T) {
	var mode atomic.Value
	mode.Store("ok")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch mode.Load() {
		case "slow":
			time.Sleep(200 * time.Millisecond) // four periods
		case "fail":
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(up.Close)
	url := natstest.Server(t)
	reports := e2e.WatchReports(t, natstest.Connect(t, url), "svc", "f1")
	reg := ops.NewRegistry()
	var control, stream string
	sc := startSidecar(t, sidecar.Config{
		NATS: natstest.Connect(t, url), Service: "svc", ID: "f1",
		UpstreamControl: up.Listener.Addr().String(), UpstreamStreaming: up.Listener.Addr().String(),
		Health:   sidecar.Probe{Period: 50 * time.Millisecond, Timeout: 3 * time.Second, FailureThreshold: 3},
		Registry: reg, Heartbeat: 100 * time.Millisecond,
	}, &control, &stream)
	checks := func(result string) float64 {
		return counter(t, reg, "headcount_sidecar_health_checks_total", map[string]string{"result": result})
	}
	reports.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })

	mode.Store("slow")
	ok := checks("ok")
	require.Eventually(t, func() bool { return checks("ok") >= ok+3 }, 10*time.Second, 10*time.Millisecond, "three slow checks")
	require.NoError(t, sc.Ready())

	mode.Store("fail")
	require.Eventually(t, func() bool { return checks("failed") >= 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 2.0, checks("tolerated"), "two failures tolerated before the third counted")
	reports.WaitFor(t, "not ready", func(r fleet.Report) bool { return r.State == fleet.StateStarting })
	require.ErrorContains(t, sc.Ready(), "500")

	mode.Store("ok")
	reports.WaitFor(t, "ready again", func(r fleet.Report) bool { return r.State == fleet.StateReady })
	require.Equal(t, []fleet.State{fleet.StateStarting, fleet.StateReady, fleet.StateStarting, fleet.StateReady}, reports.States(),
		"slow checks and tolerated failures changed nothing")

	// Gone: a check on an idle kept-alive connection may fail (tolerated);
	// the first that dials is refused and takes the follower out.
	tolerated := checks("tolerated")
	up.CloseClientConnections()
	up.Close()
	reports.WaitFor(t, "out at the refusal", func(r fleet.Report) bool { return r.State == fleet.StateStarting })
	require.ErrorContains(t, sc.Ready(), "refused")
	require.LessOrEqual(t, checks("tolerated"), tolerated+1)
}
