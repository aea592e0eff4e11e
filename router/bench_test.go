package router_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// Router overhead: every iteration does the same request directly to the
// follower and through the router, interleaved so that machine noise hits
// both alike; the added p50/p99 and the p50 ratio are reported.
//
//	go test -run '^$' -bench . -benchtime 2000x ./router/

func benchFleet(b *testing.B) (follower *member, r *testRouter) {
	url := natstest.Server(b)
	follower = startMember(b, natstest.Connect(b, url), "follower-a")
	r = startRouter(b, url, "r-1")
	r.waitReady(b, 1)
	return follower, r
}

func BenchmarkCreate(b *testing.B) {
	f, r := benchFleet(b)
	direct, routed := newClient(), newClient()
	create := func(c *http.Client, base string) time.Duration {
		start := time.Now()
		resp, err := c.Post(base+"/v1/streams/collection", "application/json", strings.NewReader(createBody))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	compare(b, func() (time.Duration, time.Duration) {
		return create(direct, f.control.URL), create(routed, r.control.URL)
	})
}

func BenchmarkFirstEvent(b *testing.B) {
	f, r := benchFleet(b)
	direct, routed := newClient(), newClient()
	firstEvent := func(c *http.Client, url string) time.Duration {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "event: init\n" {
			b.Fatalf("first line %q, err %v", line, err)
		}
		return time.Since(start)
	}
	compare(b, func() (time.Duration, time.Duration) {
		id := r.create(b) // "<follower>/<uuid>"; untimed
		_, uuid, _ := strings.Cut(id, "/")
		return firstEvent(direct, f.streaming.URL+"/v1/streams/"+uuid),
			firstEvent(routed, r.streaming.URL+"/v1/streams/"+id)
	})
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}
}

// compare runs pair b.N times and reports the latency percentiles of both
// sides, what the router adds, and the p50 ratio.
func compare(b *testing.B, pair func() (direct, routed time.Duration)) {
	var direct, routed []time.Duration
	b.ResetTimer()
	for range b.N {
		d, r := pair()
		direct, routed = append(direct, d), append(routed, r)
	}
	b.StopTimer()
	dp50, dp99 := percentile(direct, 50), percentile(direct, 99)
	rp50, rp99 := percentile(routed, 50), percentile(routed, 99)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(dp50), "direct-p50-µs")
	b.ReportMetric(us(dp99), "direct-p99-µs")
	b.ReportMetric(us(rp50), "routed-p50-µs")
	b.ReportMetric(us(rp99), "routed-p99-µs")
	b.ReportMetric(us(rp50-dp50), "added-p50-µs")
	b.ReportMetric(us(rp99-dp99), "added-p99-µs")
	b.ReportMetric(float64(rp50)/float64(dp50), "ratio-p50")
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// BenchmarkPlace measures the placement decision with 10,000 ready
// followers: choosing the least loaded and counting the placement, and the
// same after refused connections excluded a few followers.
func BenchmarkPlace(b *testing.B) {
	const n = 10_000
	view := fleet.NewView()
	now := time.Now()
	for i := range n {
		view.Apply(fleet.Report{V: fleet.Version, Service: svc, Follower: fmt.Sprintf("follower-%d", i),
			Incarnation: "i", Role: fleet.RoleFollower, State: fleet.StateReady,
			Control: "10.0.0.1:8081", Streaming: "10.0.0.1:8080", Instances: int64(i % 100),
			Seq: 1, TTLMillis: 3_600_000}, now)
	}
	b.Run("followers=10000", func(b *testing.B) {
		for b.Loop() {
			if _, ok := view.Place(svc, nil); !ok {
				b.Fatal("no placement")
			}
		}
	})
	b.Run("followers=10000/excluded=2", func(b *testing.B) {
		var tried []string
		exclude := func(f string) bool { return slices.Contains(tried, f) }
		for b.Loop() {
			tried = tried[:0]
			for range 2 {
				m, _ := view.Least(svc, exclude)
				tried = append(tried, m.Follower)
			}
			if _, ok := view.Place(svc, exclude); !ok {
				b.Fatal("no placement")
			}
		}
	})
}
