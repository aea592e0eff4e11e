package router_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

func benchFleet(b *testing.B, opts ...memberOpt) (follower *member, r *testRouter) {
	url := natstest.Server(b)
	follower = startMember(b, natstest.Connect(b, url), "follower-a", opts...)
	r = startRouter(b, url, "r-1")
	r.waitReady(b, 1)
	return follower, r
}

// upstreamProtocols are the two ways a router reaches a follower, measured
// side by side: HTTP/1.1 (an unmodified Skip: a connection per stream) and
// h2c (the sidecar and the demo advertise it: one multiplexed connection).
var upstreamProtocols = []struct {
	name string
	opts []memberOpt
}{{"upstream=http1", nil}, {"upstream=h2c", []memberOpt{h2c}}}

func eachUpstreamProtocol(b *testing.B, bench func(b *testing.B, opts ...memberOpt)) {
	for _, p := range upstreamProtocols {
		b.Run(p.name, func(b *testing.B) { bench(b, p.opts...) })
	}
}

func BenchmarkCreate(b *testing.B) { eachUpstreamProtocol(b, benchCreate) }

func benchCreate(b *testing.B, opts ...memberOpt) {
	f, r := benchFleet(b, opts...)
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

func BenchmarkFirstEvent(b *testing.B) { eachUpstreamProtocol(b, benchFirstEvent) }

func benchFirstEvent(b *testing.B, opts ...memberOpt) {
	f, r := benchFleet(b, opts...)
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

// BenchmarkCreationRate is the comparison harness's closed loop in one
// process: creationWorkers clients each create an instance, read its
// stream's init and leave, over and over; every iteration runs
// creationCycles of them straight to the follower, then as many through the
// router. Reported: both rates and routed ÷ direct, medians.
//
//	go test -run '^$' -bench CreationRate -benchtime 5x ./router/
func BenchmarkCreationRate(b *testing.B) { eachUpstreamProtocol(b, benchCreationRate) }

func benchCreationRate(b *testing.B, opts ...memberOpt) {
	const cycles = 2048 // a multiple of the clients
	f, r := benchFleet(b, opts...)
	rate := newCreationRate(b, cycles)
	// The CPU time of this whole process (clients, follower and router) per
	// cycle: unlike the rate, it hardly moves with what else the machine runs.
	timed := func(control, streaming string, routed bool) (float64, float64) {
		cpu0 := processCPU(b)
		rr := rate(control, streaming, routed)
		return rr, float64((processCPU(b) - cpu0).Microseconds()) / cycles
	}
	var direct, routed, ratio, directCPU, routerCPU []float64
	for b.Loop() {
		d, dc := timed(f.control.URL, f.streaming.URL, false)
		rr, rc := timed(r.control.URL, r.streaming.URL, true)
		direct, routed, ratio = append(direct, d), append(routed, rr), append(ratio, rr/d)
		directCPU, routerCPU = append(directCPU, dc), append(routerCPU, rc-dc)
	}
	// The router's CPU per cycle is the routed cycle's minus the direct one's
	// (the clients and the follower do the same work in both); on a machine
	// whose cores the cycle saturates, direct ÷ (direct + router) is the best
	// ratio of the rates.
	b.ReportMetric(median(directCPU), "direct-cpu-µs/cycle")
	b.ReportMetric(median(routerCPU), "router-cpu-µs/cycle")
	b.ReportMetric(median(direct), "direct-creations/s")
	b.ReportMetric(median(routed), "routed-creations/s")
	reportRatio(b, ratio)
}

// processCPU is the user and system CPU time this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRatio reports the median ratio of a side-by-side benchmark, and its
// extremes.
func reportRatio(b *testing.B, ratio []float64) {
	b.ReportMetric(median(ratio), "ratio")
	b.ReportMetric(slices.Min(ratio), "ratio-min")
	b.ReportMetric(slices.Max(ratio), "ratio-max")
}

// newCreationRate is the closed loop of creation benchmarks: rate runs
// cycles creations (rounded down to a multiple of creationWorkers) from creationWorkers clients, each creating an
// instance on control, reading its stream's init on streaming and leaving
// (routed: through a router, whose ids name the follower), and returns the
// creations per second.
func newCreationRate(b *testing.B, cycles int) (rate func(control, streaming string, routed bool) float64) {
	const creationWorkers = 32
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: creationWorkers, DisableCompression: true}}
	cycle := func(control, streaming string, routed bool) error {
		resp, err := client.Post(control+"/v1/streams/collection", "application/json", strings.NewReader(createBody))
		if err != nil {
			return err
		}
		id, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("create: %s", resp.Status)
		}
		if !routed {
			_, key, _ := strings.Cut(string(id), "/")
			id = []byte(key)
		}
		req, _ := http.NewRequest(http.MethodGet, streaming+"/v1/streams/"+string(id), nil)
		req.Header.Set("Accept", "text/event-stream")
		if resp, err = client.Do(req); err != nil {
			return err
		}
		defer resp.Body.Close()
		if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "event: init\n" {
			return fmt.Errorf("first line %q, err %v", line, err)
		}
		return nil
	}
	return func(control, streaming string, routed bool) float64 {
		start := time.Now()
		var wg sync.WaitGroup
		var failed atomic.Int64
		for w := range creationWorkers {
			wg.Go(func() {
				for range cycles / creationWorkers {
					if err := cycle(control, streaming, routed); err != nil && failed.Add(1) == 1 {
						b.Errorf("worker %d: %v", w, err)
					}
				}
			})
		}
		wg.Wait()
		return float64(cycles/creationWorkers*creationWorkers) / time.Since(start).Seconds()
	}
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
