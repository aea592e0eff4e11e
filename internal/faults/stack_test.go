package faults_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/natsembed"
)

const service = "svc"

// wait bounds every eventual condition: generous, the machine is shared.
const wait = 30 * time.Second

var (
	binOnce sync.Once
	binPath string
)

// binary builds the headcount binary once for the package's tests.
func binary(t *testing.T) string {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "headcount-faults-")
		require.NoError(t, err)
		binPath = dir + "/headcount"
		out, err := runGo("build", "-o", binPath, "github.com/headcount-dev/headcount/cmd/headcount")
		require.NoError(t, err, out)
	})
	return binPath
}

// stack is a hand-built headcount deployment on loopback: NATS (one node or
// a cluster) in this process, and the leader, followers, routers and
// scaler as child processes of the built binary.
type stack struct {
	t       *testing.T
	bin     string
	nats    []*natsNode
	leader  *e2e.Proc
	lc, ls  string // the leader's control and streaming addresses
	routers []*routerProc
	scaler  *e2e.Proc
	grpc    string // the scaler's gRPC address
	scHTTP  string // the scaler's ops address
}

type natsNode struct {
	opts natsembed.Options
	srv  *server.Server
}

type routerProc struct {
	*e2e.Proc
	id                 string
	control, streaming string
}

func (r *routerProc) endpoint() e2e.Endpoint {
	return e2e.Endpoint{Control: r.control, Streaming: r.streaming}
}

// newStack starts n NATS nodes (clustered when n > 1).
func newStack(t *testing.T, n int) *stack {
	s := &stack{t: t, bin: binary(t)}
	clients, routes := make([]int, n), make([]string, n)
	for i := range n {
		clients[i] = port(t)
		routes[i] = "127.0.0.1:" + strconv.Itoa(port(t))
	}
	for i := range n {
		o := natsembed.Options{Port: clients[i]}
		if n > 1 {
			o.ClusterPort, _ = strconv.Atoi(strings.TrimPrefix(routes[i], "127.0.0.1:"))
			for j, r := range routes {
				if j != i {
					o.Routes = append(o.Routes, r)
				}
			}
		}
		node := &natsNode{opts: o}
		s.nats = append(s.nats, node)
		s.startNATS(i)
	}
	t.Cleanup(func() {
		for i := range s.nats {
			s.stopNATS(i)
		}
	})
	if n > 1 {
		require.Eventually(t, func() bool {
			for _, node := range s.nats {
				if node.srv.NumRoutes() < n-1 {
					return false
				}
			}
			return true
		}, wait, 10*time.Millisecond, "cluster routes")
	}
	return s
}

func port(t *testing.T) int {
	addr := e2e.FreeAddr(t)
	p, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	return p
}

// url is every NATS node, comma-separated, as --nats-url takes them.
func (s *stack) url() string {
	var urls []string
	for _, n := range s.nats {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port))
	}
	return strings.Join(urls, ",")
}

func (s *stack) startNATS(i int) {
	srv, err := natsembed.Start(s.nats[i].opts)
	require.NoError(s.t, err)
	s.nats[i].srv = srv
}

func (s *stack) stopNATS(i int) {
	if srv := s.nats[i].srv; srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		s.nats[i].srv = nil
	}
}

func (s *stack) startLeader() {
	s.lc, s.ls = e2e.FreeAddr(s.t), e2e.FreeAddr(s.t)
	s.leader = e2e.Run(s.t, "leader", s.bin, "leader", "--service", service, "--id", "leader",
		"--nats-url", s.url(), "--control-addr", s.lc, "--streaming-addr", s.ls)
}

// follower starts a demo follower; extra flags override.
func (s *stack) follower(id string, extra ...string) *e2e.Proc {
	args := append([]string{"follower", "--service", service, "--id", id, "--nats-url", s.url(),
		"--control-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
		"--leader-control", s.lc, "--leader-streaming", s.ls}, extra...)
	return e2e.Run(s.t, id, s.bin, args...)
}

// router starts a router; extra flags override.
func (s *stack) router(id string, extra ...string) *routerProc {
	r := &routerProc{id: id, control: e2e.FreeAddr(s.t), streaming: e2e.FreeAddr(s.t)}
	args := append([]string{"router", "--service", service, "--id", id, "--nats-url", s.url(),
		"--control-addr", r.control, "--streaming-addr", r.streaming}, extra...)
	r.Proc = e2e.Run(s.t, id, s.bin, args...)
	s.routers = append(s.routers, r)
	return r
}

func (s *stack) startScaler(extra ...string) {
	s.grpc, s.scHTTP = e2e.FreeAddr(s.t), e2e.FreeAddr(s.t)
	args := append([]string{"scaler", "--nats-url", s.url(), "--grpc-addr", s.grpc, "--http-addr", s.scHTTP}, extra...)
	s.scaler = e2e.Run(s.t, "scaler", s.bin, args...)
}

// waitRouted waits until r is ready and sees ready followers and a leader.
func (s *stack) waitRouted(r *routerProc, followers int) {
	s.t.Helper()
	require.Eventually(s.t, func() bool {
		code, _ := e2e.Get(r.control + "/readyz")
		ready, _ := e2e.Metric(r.control, `headcount_followers{service="svc",state="ready"}`)
		leaders, _ := e2e.Metric(r.control, `headcount_leaders{service="svc"}`)
		return code == http.StatusOK && int(ready) == followers && leaders == 1
	}, wait, 20*time.Millisecond, "router %s with %d ready followers and the leader", r.id, followers)
}

func (s *stack) endpoints() []e2e.Endpoint {
	var out []e2e.Endpoint
	for _, r := range s.routers {
		out = append(out, r.endpoint())
	}
	return out
}

// keda is KEDA's generated client on the scaler.
func (s *stack) keda() externalscaler.ExternalScalerClient {
	cc, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(s.t, err)
	s.t.Cleanup(func() { _ = cc.Close() })
	return externalscaler.NewExternalScalerClient(cc)
}

var scaledObject = &externalscaler.ScaledObjectRef{Name: "svc", Namespace: "default",
	ScalerMetadata: map[string]string{"service": service, "targetInstancesPerReplica": "10"}}

func live(c externalscaler.ExternalScalerClient) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: scaledObject, MetricName: "headcount-svc"})
	if err != nil {
		return 0, err
	}
	return res.MetricValues[0].MetricValueFloat, nil
}

// envDuration reads a duration from the environment, else def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, name)
	return d
}

func runGo(args ...string) (string, error) {
	out, err := exec.Command("go", args...).CombinedOutput()
	return string(out), err
}
