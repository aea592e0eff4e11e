// Command compare is the side-by-side harness of loadtest/: in one run on
// loopback it starts an embedded NATS, the demo leader and followers, headcount
// routers and HAProxy (configured as Skip's example), runs the same k6
// scenarios (a) direct to one follower, (b) through the headcount router and
// (c) through HAProxy, and prints a table of ratios (medians with -runs > 1).
//
//	go run ./loadtest/compare -runs 3        (task bench:compare -- -runs 3)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

type config struct {
	k6, scripts, haproxy, out, cpuProfile string
	scenarios, targets                    set
	haproxyNoDelay                        bool
	runs, followers, routers              int
	duration                              time.Duration
	vus, rate, clients, writeRate         int
	balanceRate, holdMinMs, holdMaxMs     int
	holdAlpha                             float64
	instanceTTL                           time.Duration
	memoryStreams                         int
	headcount                             string // a built binary for the memory run, else ./cmd/headcount is built
}

func main() {
	var c config
	flag.StringVar(&c.k6, "k6", "bin/k6", "k6 binary with the SSE extension (task k6)")
	flag.StringVar(&c.scripts, "scripts", "loadtest", "directory of the k6 scripts")
	flag.StringVar(&c.haproxy, "haproxy", "haproxy", "haproxy binary; Debian's package is installed when missing")
	flag.StringVar(&c.out, "out", "", "directory for k6 summaries, logs and haproxy.cfg (default .cache/loadtest/<time>)")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the stack (routers, followers, leader, NATS) to this file")
	c.scenarios, c.targets = set{}, set{}
	flag.Var(c.scenarios, "scenarios", "comma-separated subset of throughput,latency,fanout,balance (default all)")
	flag.Var(c.targets, "targets", "comma-separated subset of direct,router,haproxy (default all)")
	flag.BoolVar(&c.haproxyNoDelay, "haproxy-no-delay", false, "add 'option http-no-delay' to HAProxy (Skip's example has not)")
	flag.IntVar(&c.runs, "runs", 1, "repeat everything this many times and print medians")
	flag.IntVar(&c.followers, "followers", 3, "demo followers")
	flag.IntVar(&c.routers, "routers", 3, "router replicas for the balance scenario (the others use one)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "length of each k6 scenario")
	flag.IntVar(&c.vus, "vus", 20, "closed-loop VUs of the throughput scenario")
	flag.IntVar(&c.rate, "rate", 100, "creations/s of the latency scenario")
	flag.IntVar(&c.clients, "clients", 50, "streams held in the fan-out scenario")
	flag.IntVar(&c.writeRate, "write-rate", 20, "writes/s to the leader in the fan-out scenario")
	flag.IntVar(&c.balanceRate, "balance-rate", 100, "creations/s of the balance scenario")
	flag.IntVar(&c.holdMinMs, "hold-min-ms", 300, "balance scenario: shortest stream lifetime (Pareto scale)")
	flag.Float64Var(&c.holdAlpha, "hold-alpha", 1.1, "balance scenario: Pareto shape of lifetimes (smaller: more skew)")
	flag.IntVar(&c.holdMaxMs, "hold-max-ms", 20000, "balance scenario: longest stream lifetime")
	flag.DurationVar(&c.instanceTTL, "instance-ttl", time.Second, "followers destroy an instance this long after its subscriber leaves (Skip: 30s)")
	flag.IntVar(&c.memoryStreams, "memory-streams", 0, "instead of the k6 scenarios: memory and file descriptors per open stream at this many streams, router vs HAProxy")
	flag.StringVar(&c.headcount, "headcount", "", "memory run: this headcount binary (routers and followers) instead of building ./cmd/headcount, e.g. an older commit's for a before/after")
	flag.Parse()
	if err := run(c, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run(c config, w io.Writer) error {
	if c.out == "" {
		c.out = filepath.Join(".cache", "loadtest", time.Now().UTC().Format("20060102-150405"))
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	// Everything printed is kept beside the k6 summaries.
	report, err := os.Create(filepath.Join(c.out, "report.txt"))
	if err != nil {
		return err
	}
	defer func() { _ = report.Close() }()
	w = io.MultiWriter(w, report)
	haproxyBin, err := ensureHAProxy(c.haproxy, w)
	if err != nil {
		return err
	}
	if c.memoryStreams > 0 {
		fmt.Fprintf(w, "%s  command: %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(os.Args, " "))
		return runMemory(c, haproxyBin, w)
	}
	if _, err := os.Stat(c.k6); err != nil {
		return fmt.Errorf("k6 binary: %w (build it with: task k6)", err)
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(w, "%s  %s/%s, %d CPUs, %s\ncommand: %s\noutput in %s\n",
		time.Now().UTC().Format(time.RFC3339), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		runtime.Version(), strings.Join(os.Args, " "), c.out)
	var all []figures
	for i := range c.runs {
		f, err := runOnce(c, i, haproxyBin, w)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		if c.runs > 1 {
			fmt.Fprintf(w, "\nrun %d of %d\n", i+1, c.runs)
			printTable(w, f)
		}
		all = append(all, f)
	}
	if c.runs > 1 {
		fmt.Fprintf(w, "\nmedians of %d runs\n", c.runs)
	}
	printTable(w, median(all))
	return nil
}

// figures are one run's results, keyed "<figure>/<target>".
type figures map[string]float64

// get is a figure, NaN when it was not measured.
func (f figures) get(key string) float64 {
	if v, ok := f[key]; ok {
		return v
	}
	return math.NaN()
}

// target is where k6 sends its traffic.
type target struct {
	name                      string
	control, streaming, write string // base URLs; several comma-separated for replicas
}

func (t target) env() map[string]string {
	return map[string]string{"CONTROL": t.control, "STREAMING": t.streaming, "WRITE": t.write}
}

func runOnce(c config, run int, haproxyBin string, w io.Writer) (figures, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := startStack(c.followers, c.routers, c.instanceTTL, log)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	dir := filepath.Join(c.out, fmt.Sprintf("run%d", run+1))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	h, err := startHAProxy(haproxyBin, dir, s, c.haproxyNoDelay)
	if err != nil {
		return nil, err
	}
	defer h.stop()
	k := k6{bin: c.k6, scripts: c.scripts, out: dir}

	leader := "http://" + s.leader.ControlAddr()
	r1 := s.routers[0]
	direct := target{"direct", "http://" + s.followers[0].ControlAddr(), "http://" + s.followers[0].StreamingAddr(), leader}
	routed := target{"router", r1.controlURL, r1.streamURL, r1.controlURL}
	proxied := target{"haproxy", h.controlURL, h.streamURL, h.controlURL}
	targets := []target{direct, routed, proxied}
	// Rotate the order from run to run so drift on a shared machine does
	// not always favour the same target.
	rotate := func(ts []target) []target {
		n := run % len(ts)
		return append(slices.Clone(ts[n:]), ts[:n]...)
	}
	dur := strconv.Itoa(int(c.duration.Seconds())) + "s"
	f := figures{}
	ctx := context.Background()
	for _, t := range rotate(targets) {
		if !c.targets.has(t.name) {
			continue
		}
		for _, sc := range []struct {
			name, script string
			env          map[string]string
			record       func(summary)
		}{
			{"throughput", "streams.js", map[string]string{"MODE": "closed", "VUS": strconv.Itoa(c.vus), "DURATION": dur},
				func(sum summary) { f["throughput/"+t.name] = sum.stat("creations", "rate") }},
			{"latency", "streams.js", map[string]string{"MODE": "rate", "RATE": strconv.Itoa(c.rate), "DURATION": dur},
				func(sum summary) {
					f["create_p50/"+t.name] = sum.stat("create_latency", "med")
					f["create_p99/"+t.name] = sum.stat("create_latency", "p(99)")
					f["ttfe_p50/"+t.name] = sum.stat("sse_time_to_first_event", "med")
					f["ttfe_p99/"+t.name] = sum.stat("sse_time_to_first_event", "p(99)")
				}},
			{"fanout", "fanout.js", map[string]string{"CLIENTS": strconv.Itoa(c.clients), "WRITE_RATE": strconv.Itoa(c.writeRate), "DURATION": dur},
				func(sum summary) {
					f["update_p50/"+t.name] = sum.stat("sse_event_latency", "med")
					f["update_p99/"+t.name] = sum.stat("sse_event_latency", "p(99)")
				}},
		} {
			if !c.scenarios.has(sc.name) {
				continue
			}
			sum, err := k.measure(ctx, s, sc.name+"-"+t.name, sc.script, merge(t.env(), sc.env), nil)
			if err != nil {
				return nil, err
			}
			sc.record(sum)
			f["fails/"+t.name] += sum.stat("checks", "fails")
			fmt.Fprintf(w, "run %d: %s via %s done\n", run+1, sc.name, t.name)
		}
	}

	// Balance: skewed lifetimes, every router replica placing at once,
	// beside HAProxy's round robin. Direct has one follower: nothing to balance.
	replicas := target{name: "router"}
	for _, r := range s.routers {
		replicas.control = join(replicas.control, r.controlURL)
		replicas.streaming = join(replicas.streaming, r.streamURL)
	}
	replicas.write = replicas.control
	balanceEnv := map[string]string{"MODE": "rate", "RATE": strconv.Itoa(c.balanceRate), "DURATION": dur,
		"MAX_VUS": "2000", "HOLD_MIN_MS": strconv.Itoa(c.holdMinMs),
		"HOLD_ALPHA": strconv.FormatFloat(c.holdAlpha, 'f', -1, 64), "HOLD_MAX_MS": strconv.Itoa(c.holdMaxMs),
		"P99_CREATE_MS": "1000"}
	for _, t := range rotate([]target{replicas, proxied}) {
		if !c.scenarios.has("balance") || !c.targets.has(t.name) {
			continue
		}
		var b balance
		sum, err := k.measure(ctx, s, "balance-"+t.name, "streams.js", merge(t.env(), balanceEnv),
			func(elapsed time.Duration) {
				// The first third is ramp-up: live instances have not reached steady state.
				if elapsed > c.duration/3 && elapsed < c.duration {
					b.sample(s.instances())
				}
			})
		if err != nil {
			return nil, err
		}
		f["balance/"+t.name] = b.mean()
		f["fails/"+t.name] += sum.stat("checks", "fails")
		fmt.Fprintf(w, "run %d: balance via %s done (%d routers)\n", run+1, t.name, len(s.routers))
	}
	return f, nil
}

// idleTimeout bounds the wait for the previous scenario's instances to go.
// Through HAProxy it is long: HAProxy keeps the follower side of a stream
// whose client closed until a write fails, that is until the next SSE
// keep-alive (15 s) and the one after, and then the instance TTL.
const idleTimeout = 60 * time.Second

// measure waits for the followers to be empty, then runs k6, calling sample
// every 100 ms while it runs (when not nil).
func (k k6) measure(ctx context.Context, s *stack, label, script string, env map[string]string,
	sample func(elapsed time.Duration)) (summary, error) {
	if err := s.awaitIdle(ctx, idleTimeout); err != nil {
		return summary{}, fmt.Errorf("before %s: %w", label, err)
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		if sample == nil {
			return
		}
		start := time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				sample(now.Sub(start))
			}
		}
	}()
	sum, err := k.run(label, script, env)
	close(stop)
	<-sampled
	return sum, err
}

// balance averages max ÷ mean live instances per follower over samples.
type balance struct {
	sum float64
	n   int
}

func (b *balance) sample(instances []int64) {
	var total, most int64
	for _, n := range instances {
		total += n
		most = max(most, n)
	}
	if total == 0 {
		return
	}
	b.sum += float64(most) * float64(len(instances)) / float64(total)
	b.n++
}

func (b *balance) mean() float64 {
	if b.n == 0 {
		return math.NaN()
	}
	return b.sum / float64(b.n)
}

// set is a flag of comma-separated names; empty means all.
type set map[string]bool

func (s set) String() string { return strings.Join(slices.Sorted(maps.Keys(s)), ",") }

func (s set) Set(v string) error {
	for name := range strings.SplitSeq(v, ",") {
		s[strings.TrimSpace(name)] = true
	}
	return nil
}

func (s set) has(name string) bool { return len(s) == 0 || s[name] }

func merge(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for _, m := range []map[string]string{a, b} {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func join(list, url string) string {
	if list == "" {
		return url
	}
	return list + "," + url
}

// median takes, figure by figure, the median over runs.
func median(runs []figures) figures {
	out := figures{}
	for key := range runs[0] {
		var vs []float64
		for _, r := range runs {
			if v, ok := r[key]; ok && !math.IsNaN(v) {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			out[key] = math.NaN()
			continue
		}
		slices.Sort(vs)
		if n := len(vs); n%2 == 1 {
			out[key] = vs[n/2]
		} else {
			out[key] = (vs[n/2-1] + vs[n/2]) / 2
		}
	}
	return out
}

// rows of the table: figure key, label.
var rows = []struct{ key, label string }{
	{"throughput", "creations/s, closed loop"},
	{"create_p50", "create p50 ms, fixed rate"},
	{"create_p99", "create p99 ms, fixed rate"},
	{"ttfe_p50", "first event p50 ms"},
	{"ttfe_p99", "first event p99 ms"},
	{"update_p50", "write→update p50 ms"},
	{"update_p99", "write→update p99 ms"},
	{"balance", "balance max÷mean"},
	{"fails", "failed checks"},
}

// goals are the targets, each from one run's (or the medians') figures.
var goals = []struct {
	label string
	value func(figures) float64
	ok    func(float64) bool
	unit  string
}{
	{"creations/s router ÷ haproxy ≥ 0.9", func(f figures) float64 { return f.get("throughput/router") / f.get("throughput/haproxy") },
		func(v float64) bool { return v >= 0.9 }, "×"},
	{"create p99 router − direct ≤ 1 ms", func(f figures) float64 { return f.get("create_p99/router") - f.get("create_p99/direct") },
		func(v float64) bool { return v <= 1 }, "ms"},
	{"balance max÷mean, routers ≤ 1.05", func(f figures) float64 { return f.get("balance/router") },
		func(v float64) bool { return v <= 1.05 }, "×"},
	{"write→update p99 router − direct ≤ 5 ms", func(f figures) float64 { return f.get("update_p99/router") - f.get("update_p99/direct") },
		func(v float64) bool { return v <= 5 }, "ms"},
}

func printTable(w io.Writer, f figures) {
	fmt.Fprintf(w, "%-28s %10s %10s %10s %16s %15s\n", "", "direct", "router", "haproxy", "router÷haproxy", "router−direct")
	for _, r := range rows {
		d, rt, h := f.get(r.key+"/direct"), f.get(r.key+"/router"), f.get(r.key+"/haproxy")
		fmt.Fprintf(w, "%-28s %10s %10s %10s %16s %15s\n", r.label, num(d), num(rt), num(h), num(rt/h), num(rt-d))
	}
	fmt.Fprintln(w)
	for _, g := range goals {
		v := g.value(f)
		verdict := "MISSED"
		switch {
		case math.IsNaN(v):
			verdict = "not measured"
		case g.ok(v):
			verdict = "met"
		}
		fmt.Fprintf(w, "%-42s %8s %-2s  %s\n", g.label, num(v), g.unit, verdict)
	}
}

func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', decimals(v), 64)
}

// decimals keeps three significant digits or so for small values.
func decimals(v float64) int {
	switch a := math.Abs(v); {
	case a >= 100:
		return 0
	case a >= 10:
		return 1
	case a >= 1:
		return 2
	}
	return 3
}
