package router_test

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// slowHeartbeat keeps a member in the views for 30 s after its reports stop:
// the tests that kill it must be over well before, however loaded the machine.
func slowHeartbeat(_ *member, c *agent.Config) { c.Heartbeat, c.TTL = time.Second, 30*time.Second }

// kill stops a member as kill -9 would: no more reports, ports closed.
func (m *member) kill() {
	m.agent.Abandon()
	m.closePorts()
}

// closePorts kills the follower but not its agent, as a dead follower behind
// a live sidecar: reports keep coming, connections are refused.
func (m *member) closePorts() {
	m.control.CloseClientConnections()
	m.control.Close()
	m.streaming.Close()
}

// counter reads one unlabeled counter from a router's /metrics.
func counter(t *testing.T, r *testRouter, name string) int {
	t.Helper()
	match := regexp.MustCompile(`(?m)^` + name + `\{[^}]*\} (\d+)$`).FindStringSubmatch(scrape(t, r))
	if match == nil {
		return 0
	}
	n, err := strconv.Atoi(match[1])
	require.NoError(t, err)
	return n
}

// Three followers die while still in every view (and a fourth dies behind an
// agent that keeps reporting it ready): no creation fails, each router tries
// each dead one at most once (the refusal ejects it at once), and a fresh
// report does not bring the fourth back while its probe is refused.
func TestDeadFollowersCostNoCreation(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	alive := startMember(t, nc, "follower-alive")
	var dead []*member
	for _, id := range []string{"follower-d1", "follower-d2", "follower-d3", "follower-zombie"} {
		dead = append(dead, startMember(t, nc, id, slowHeartbeat))
	}
	zombie := dead[3]
	routers := []*testRouter{startRouter(t, url, "r-1"), startRouter(t, url, "r-2")}
	for _, r := range routers {
		r.waitReady(t, 5)
	}
	for _, m := range dead[:3] {
		m.kill()
	}
	zombie.closePorts()
	create := func(n int) {
		for i := range n {
			r := routers[i%2]
			code, body, _ := do(t, http.MethodPost, r.control.URL+"/v1/streams/collection", createBody)
			require.Equal(t, http.StatusCreated, code, body)
			assert.True(t, strings.HasPrefix(body, alive.id+"/"), body)
		}
	}
	create(60)
	// The zombie's next heartbeats reach both views; its probe is refused.
	seq := zombie.agent.Report().Seq
	for _, r := range routers {
		require.Eventually(t, func() bool { m, _ := r.View().Member(svc, zombie.id); return m.Seq > seq },
			5*time.Second, 10*time.Millisecond)
	}
	create(20)
	for _, r := range routers {
		for _, m := range dead {
			_, stillThere := r.View().Member(svc, m.id)
			require.True(t, stillThere, "%s expired before the test was over: it proves nothing", m.id)
		}
		m, _ := r.View().Member(svc, zombie.id)
		assert.True(t, m.Ejected, "a fresh report whose probe is refused keeps the follower out")
		retries, ejections := counter(t, r, "headcount_router_retries_total"), counter(t, r, "headcount_router_ejections_total")
		assert.LessOrEqual(t, retries, len(dead), "each dead follower is refused at most once per router")
		assert.Equal(t, retries, ejections, "every refusal ejected a follower that was not ejected yet")
	}
}

// diesUnderCreations makes a follower die under each creation sent to it:
// it reads the request and drops the connection without an answer.
func diesUnderCreations(m *member, _ *agent.Config) {
	h := m.control.Config.Handler
	m.control.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/streams/") {
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = c.Close()
			}
			return
		}
		h.ServeHTTP(w, r)
	})
}

// A follower killed while a creation is on its way to it (the request sent,
// no answer, the connection closed): the creation is retried elsewhere, as
// whatever the follower created died with it, and the follower is ejected.
func TestFollowerDyingUnderACreationCostsNoCreation(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	alive := startMember(t, nc, "follower-alive")
	dying := startMember(t, nc, "follower-dying", diesUnderCreations, slowHeartbeat)
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 2)
	for range 10 {
		code, body, _ := do(t, http.MethodPost, r.control.URL+"/v1/streams/collection", createBody)
		require.Equal(t, http.StatusCreated, code, body)
		assert.True(t, strings.HasPrefix(body, alive.id+"/"), body)
	}
	// Ejected at each dropped creation (a fresh report, whose probe it still
	// answers, brings it back): every attempt on it was retried, none failed.
	ejections := counter(t, r, "headcount_router_ejections_total")
	assert.GreaterOrEqual(t, ejections, 1, "%s was tried and ejected", dying.id)
	assert.Equal(t, ejections, counter(t, r, "headcount_router_retries_total"))
}
