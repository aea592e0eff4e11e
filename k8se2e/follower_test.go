package k8se2e

import (
	"io"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
)

// fakeFollower is a follower pod as headcount sees it: an agent reporting
// for the pod over NATS, and a control port answering the identity probe
// that routers and the scaler make before they count a follower. No service
// runs behind it: the instance counts are the test's.
type fakeFollower struct {
	*agent.Agent
	srv *http.Server
}

// startFollower reports for pod as a ready follower, its control port on
// host (an address the scaler and the adapter can reach).
func startFollower(nc *nats.Conn, host, pod string) (*fakeFollower, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, err
	}
	a, err := agent.New(nc, agent.Config{Service: service, Follower: pod, Pod: pod, Namespace: namespace,
		Control: ln.Addr().String(), Streaming: ln.Addr().String(), Heartbeat: 200 * time.Millisecond})
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(fleet.IdentityPath, a.IdentityHandler())
	// A creation a router places here is one more instance (the follower's
	// answer: 201 and the new instance's id).
	mux.HandleFunc("POST /v1/streams/{resource}", func(w http.ResponseWriter, _ *http.Request) {
		a.Add(1)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, pod+"/"+uuid.NewString())
	})
	f := &fakeFollower{Agent: a, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = f.srv.Serve(ln) }()
	a.Ready()
	return f, nil
}

func (f *fakeFollower) stop() {
	_ = f.Agent.Close()
	_ = f.srv.Close()
}
