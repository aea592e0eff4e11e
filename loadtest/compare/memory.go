package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsembed"
)

// runMemory measures what an open SSE stream costs a proxy: n streams through
// one headcount router (the built binary, its own process), then the same
// through HAProxy, to demo followers running as processes of their own, so
// that each proxy's resident memory and file descriptors are its own.
func runMemory(c config, haproxyBin string, w io.Writer) error {
	if err := raiseFDLimit(c.memoryStreams); err != nil {
		return fmt.Errorf("file descriptor limit: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	bin := c.headcount
	if bin == "" {
		bin = filepath.Join(c.out, "headcount")
		build := exec.Command("go", "build", "-o", bin, "./cmd/headcount")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
	}
	ns, err := natsembed.Start(natsembed.Options{})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	url := ns.ClientURL()
	s := &stack{nats: ns}
	defer s.stop()
	nc, err := s.connect("headcount-memory")
	if err != nil {
		return err
	}
	view := fleet.NewView()
	watcher, err := fleet.Watch(nc, view, fleet.WatchConfig{Services: []string{service}, Logger: log})
	if err != nil {
		return err
	}
	defer watcher.Close()
	lc, err := s.connect("headcount-leader")
	if err != nil {
		return err
	}
	if s.leader, err = demo.StartLoopback(demo.StartLeader, demo.Config{Service: service, ID: "leader", NATS: lc, Logger: log}); err != nil {
		return err
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	start := func(name string, args ...string) (*exec.Cmd, error) {
		cmd := exec.Command(bin, append(args, "--nats-url", url, "--service", service, "--log-level", "warn")...)
		logf, err := os.Create(filepath.Join(c.out, name+".log"))
		if err != nil {
			return nil, err
		}
		defer func() { _ = logf.Close() }()
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		procs = append(procs, cmd)
		return cmd, nil
	}
	for i := range c.followers {
		id := fmt.Sprintf("follower-%d", i+1)
		if _, err := start(id, "follower", "--id", id, "--control-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
			"--leader-control", s.leader.ControlAddr(), "--leader-streaming", s.leader.StreamingAddr(), "--instance-ttl", "1s"); err != nil {
			return err
		}
	}
	rc, err := freeAddr()
	if err != nil {
		return err
	}
	rs, err := freeAddr()
	if err != nil {
		return err
	}
	rt, err := start("router", "router", "--id", "r-mem", "--control-addr", rc, "--streaming-addr", rs, "--no-rebalance")
	if err != nil {
		return err
	}
	if err := await(func() bool { return view.Totals(service).Ready == c.followers }, 30*time.Second); err != nil {
		return fmt.Errorf("followers: %w", err)
	}
	if err := await(func() bool {
		resp, err := http.Get("http://" + rc + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}, 10*time.Second); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	var members []haproxyMember
	for _, m := range view.Members(service) {
		if m.Role == fleet.RoleFollower {
			members = append(members, haproxyMember{ID: m.Follower, Control: m.Control, Streaming: m.Streaming})
		}
	}
	h, err := startHAProxyFor(haproxyBin, c.out, s.leader.ControlAddr(), members, false)
	if err != nil {
		return err
	}
	defer h.stop()

	fmt.Fprintf(w, "\n%d open SSE streams through one proxy, to %d demo followers (each its own process)\n\n", c.memoryStreams, c.followers)
	fmt.Fprintln(w, "| proxy | resident before | resident with the streams | **per stream** | file descriptors per stream | Go heap + stacks per stream |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, t := range []struct {
		name               string
		pid                int
		control, streaming string
		metrics            string // a headcount process's /metrics
	}{
		{"headcount router", rt.Process.Pid, "http://" + rc, "http://" + rs, "http://" + rc + "/metrics"},
		{"HAProxy", h.cmd.Process.Pid, h.controlURL, h.streamURL, ""},
	} {
		before, fdsBefore, err := usage(t.pid)
		if err != nil {
			return err
		}
		goBefore, _ := goMemory(t.metrics)
		streams, err := openStreams(t.control, t.streaming, c.memoryStreams)
		if err == nil {
			if t.metrics != "" {
				// A Go process holds its garbage until its next collection: wait
				// for one (the runtime forces one at least every 2 minutes).
				// HAProxy has no collection to wait for.
				_, gcs := goMemory(t.metrics)
				_ = await(func() bool { _, n := goMemory(t.metrics); return n > gcs }, 150*time.Second)
			}
			time.Sleep(3 * time.Second) // let the proxy settle
			var after, fds int64
			if after, fds, err = usage(t.pid); err == nil {
				n := int64(len(streams))
				goPer := "n/a"
				if goAfter, _ := goMemory(t.metrics); goBefore.heap > 0 {
					goPer = goAfter.perStream(goBefore, n)
				}
				fmt.Fprintf(w, "| %s | %.1f MiB | %.1f MiB | **%.1f KiB** | %.2f | %s |\n", t.name,
					float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/float64(n)/1024,
					float64(fds-fdsBefore)/float64(n), goPer)
			}
		}
		for _, st := range streams {
			_ = st.Close()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		// The followers collect the abandoned instances after their ttl.
		if err := await(func() bool { return view.Totals(service).Instances == 0 }, 60*time.Second); err != nil {
			return fmt.Errorf("instances left after %s: %w", t.name, err)
		}
	}
	return nil
}

// raiseFDLimit lets this process, and the proxies and followers it starts
// (which inherit its limit), hold n streams: a proxy needs 2 file
// descriptors per stream and a few hundred more at most. Raising the hard
// limit takes CAP_SYS_RESOURCE; without it, the error says how many streams
// the hard limit allows.
func raiseFDLimit(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	const spare = 256
	want := uint64(2*n + spare)
	if lim.Cur >= want {
		return nil
	}
	lim.Cur, lim.Max = want, max(lim.Max, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		return fmt.Errorf("%d streams need %d file descriptors per proxy, the hard limit is %d and cannot be raised (%w): at most %d streams",
			n, want, lim.Max, err, (lim.Max-spare)/2)
	}
	return nil
}

// openStreams creates n instances through control and opens each one's
// stream through streaming, read up to its first event; 64 at a time.
func openStreams(control, streaming string, n int) ([]io.Closer, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	var (
		mu      sync.Mutex
		streams []io.Closer
		first   error
		wg      sync.WaitGroup
	)
	work := make(chan struct{})
	for range 64 {
		wg.Go(func() {
			for range work {
				st, err := openStream(client, control, streaming)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if st != nil {
					streams = append(streams, st)
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	return streams, first
}

func openStream(client *http.Client, control, streaming string) (io.Closer, error) {
	resp, err := client.Post(control+"/v1/streams/collection", "application/json", strings.NewReader(`{"name":"posts"}`))
	if err != nil {
		return nil, err
	}
	id, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("create: %d %s %v", resp.StatusCode, id, err)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, streaming+"/v1/streams/"+string(id), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err = client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("stream: %s", resp.Status)
	}
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			_ = resp.Body.Close()
			return nil, err
		}
		if line == "\n" {
			return resp.Body, nil
		}
	}
}

// usage is pid's resident memory (bytes) and open file descriptors.
func usage(pid int) (rss, fds int64, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"), 10, 64)
			if err != nil {
				return 0, 0, err
			}
			rss = kb << 10
		}
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, int64(len(entries)), err
}

// goMemory is a headcount process's Go heap in use, goroutine stacks and
// goroutines, and how many collections it ran, from its /metrics; zeros
// when url is "".
func goMemory(url string) (m goStats, gcs int) {
	if url == "" {
		return m, 0
	}
	resp, err := http.Get(url)
	if err != nil {
		return m, 0
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		for series, v := range map[string]*float64{
			"go_memstats_heap_inuse_bytes ": &m.heap, "go_memstats_stack_inuse_bytes ": &m.stacks, "go_goroutines ": &m.goroutines,
		} {
			if s, ok := strings.CutPrefix(line, series); ok {
				*v, _ = strconv.ParseFloat(s, 64)
			}
		}
		if v, ok := strings.CutPrefix(line, "go_gc_duration_seconds_count "); ok {
			gcs, _ = strconv.Atoi(v)
		}
	}
	return m, gcs
}

type goStats struct{ heap, stacks, goroutines float64 }

// perStream is what n streams added, as the table's cell.
func (m goStats) perStream(before goStats, n int64) string {
	per := func(a, b float64) float64 { return (a - b) / float64(n) }
	return fmt.Sprintf("%.1f KiB (heap %.1f, stacks %.1f; %.2f goroutines)", (per(m.heap, before.heap)+per(m.stacks, before.stacks))/1024,
		per(m.heap, before.heap)/1024, per(m.stacks, before.stacks)/1024, per(m.goroutines, before.goroutines))
}

func await(ok func() bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return errors.New("not in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
