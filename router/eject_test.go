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
	"github.com/headcount-dev/headcount/natsembed"
)

// slowHeartbeat keeps a member in the views for 3 s after its reports stop.
func slowHeartbeat(_ *member, c *agent.Config) { c.Heartbeat = time.Second }

// kill stops a member as kill -9 would: no more reports, ports closed.
func (m *member) kill() {
	m.agent.Abandon()
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

// Three followers die while still in every view: no creation fails, and each
// router tries each dead one at most once (the refusal ejects it at once).
func TestDeadFollowersCostNoCreation(t *testing.T) {
	url := natsembed.Test(t)
	nc := natsembed.Connect(t, url)
	alive := startMember(t, nc, "follower-alive")
	var dead []*member
	for _, id := range []string{"follower-d1", "follower-d2", "follower-d3"} {
		dead = append(dead, startMember(t, nc, id, slowHeartbeat))
	}
	routers := []*testRouter{startRouter(t, url, "r-1"), startRouter(t, url, "r-2")}
	for _, r := range routers {
		r.waitReady(t, 4)
	}
	for _, m := range dead {
		m.kill()
	}
	for i := range 60 {
		r := routers[i%2]
		code, body, _ := do(t, http.MethodPost, r.control.URL+"/v1/streams/collection", createBody)
		require.Equal(t, http.StatusCreated, code, body)
		assert.True(t, strings.HasPrefix(body, alive.id+"/"), body)
	}
	for _, r := range routers {
		for _, m := range dead {
			_, stillThere := r.View().Member(svc, m.id)
			require.True(t, stillThere, "%s expired before the test was over: it proves nothing", m.id)
		}
		retries, ejections := counter(t, r, "headcount_router_retries_total"), counter(t, r, "headcount_router_ejections_total")
		assert.LessOrEqual(t, retries, len(dead), "each dead follower is refused at most once per router")
		assert.Equal(t, retries, ejections, "every refusal ejected a follower that was not ejected yet")
	}
}
