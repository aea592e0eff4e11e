package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Endpoint is one router as a client sees it.
type Endpoint struct{ Control, Streaming string }

// Load is a Go load client for fault tests and the soak: workers create
// resource instances through the routers and subscribe to each, keeping
// their streams open; a writer changes the leader's input; everything that
// goes wrong is counted by cause. (k6 does the same for benchmarks; this
// client needs no build and runs inside `go test`.)
type Load struct {
	// Endpoints returns the routers to use now; a request goes to one at
	// random (as a Service would). Called before every request.
	Endpoints func() []Endpoint
	Workers   int           // creation loops (default 4)
	Every     time.Duration // pause between a worker's creations (default 100 ms)
	// KeepStreams bounds the open streams: past it the oldest is closed by
	// the client (default 200).
	KeepStreams int
	WriteEvery  time.Duration // default 200 ms; negative: no writes
	// Resource and Params name what a creation makes: POST
	// /v1/streams/<Resource> with Params (default the demo's collection
	// resource, `{"name":"posts"}`).
	Resource, Params string
	// OpenLoop starts each worker's creations every Every whether or not
	// the last one was answered, as independent clients do: an outage then
	// piles up held creations instead of slowing the workers down.
	OpenLoop bool

	client *http.Client
	mu     sync.Mutex
	counts Counts
	open   []*loadStream
	stop   context.CancelFunc
	wg     sync.WaitGroup
}

// Counts is what a Load saw. Failures are keyed by cause: "<status>
// <reason>" for an HTTP error, "refused", "reset" or "transport: <err>".
type Counts struct {
	Sent          int // creations sent, answered or not
	Created       int
	CreatedOn     map[string]int // creations by the follower that made the instance
	CreateFailed  map[string]int
	StreamsOpened int
	StreamFailed  map[string]int // subscriptions that did not open
	StreamsCut    map[string]int // open streams that ended without the client leaving, by cause
	CutOwners     map[string]int // the same, by the follower that owned the instance
	Updates       int            // update events received
	Writes        int
	WriteFailed   map[string]int
}

// Failures sums a failure map.
func Failures(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (c Counts) String() string {
	return fmt.Sprintf("created %d, creation failures %s, streams opened %d, subscription failures %s, streams cut %s (owners %s), updates %d, writes %d, write failures %s",
		c.Created, fmtMap(c.CreateFailed), c.StreamsOpened, fmtMap(c.StreamFailed), fmtMap(c.StreamsCut), fmtMap(c.CutOwners), c.Updates, c.Writes, fmtMap(c.WriteFailed))
}

func fmtMap(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

type loadStream struct {
	owner   string
	resp    *http.Response
	closing bool
	updates int
}

// Start runs l until Stop.
func (l *Load) Start() {
	if l.Workers <= 0 {
		l.Workers = 4
	}
	if l.Every <= 0 {
		l.Every = 100 * time.Millisecond
	}
	if l.KeepStreams <= 0 {
		l.KeepStreams = 200
	}
	if l.WriteEvery == 0 {
		l.WriteEvery = 200 * time.Millisecond
	}
	if l.Resource == "" {
		l.Resource, l.Params = "collection", `{"name":"posts"}`
	}
	l.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	l.counts = Counts{CreatedOn: map[string]int{}, CreateFailed: map[string]int{}, StreamFailed: map[string]int{}, StreamsCut: map[string]int{},
		CutOwners: map[string]int{}, WriteFailed: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	for range l.Workers {
		l.wg.Go(func() { l.creations(ctx) })
	}
	if l.WriteEvery > 0 {
		l.wg.Go(func() { l.writes(ctx) })
	}
}

// Stop ends the load, closes every stream and returns the counts.
func (l *Load) Stop() Counts {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	open := l.open
	l.open = nil
	for _, s := range open {
		s.closing = true
	}
	l.mu.Unlock()
	for _, s := range open {
		_ = s.resp.Body.Close()
	}
	return l.Snapshot()
}

// Snapshot returns the counts so far.
func (l *Load) Snapshot() Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts
	c.CreateFailed, c.StreamFailed, c.StreamsCut, c.WriteFailed = clone(c.CreateFailed), clone(c.StreamFailed), clone(c.StreamsCut), clone(c.WriteFailed)
	c.CutOwners, c.CreatedOn = clone(c.CutOwners), clone(c.CreatedOn)
	return c
}

// OpenStreams is how many streams are open now.
func (l *Load) OpenStreams() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

func clone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (l *Load) pick() (Endpoint, bool) {
	eps := l.Endpoints()
	if len(eps) == 0 {
		return Endpoint{}, false
	}
	return eps[rand.IntN(len(eps))], true
}

func (l *Load) creations(ctx context.Context) {
	every(ctx, l.Every, func(int) {
		if l.OpenLoop {
			l.wg.Go(func() { l.create(ctx) })
		} else {
			l.create(ctx)
		}
	})
}

func (l *Load) create(ctx context.Context) {
	l.mu.Lock()
	l.counts.Sent++
	l.mu.Unlock()
	if body, ok := l.call(ctx, http.MethodPost, "/v1/streams/"+l.Resource, l.Params, http.StatusCreated, &l.counts.CreateFailed, &l.counts.Created); ok {
		id := strings.TrimSpace(body)
		owner, _, _ := strings.Cut(id, "/")
		l.mu.Lock()
		l.counts.CreatedOn[owner]++
		l.mu.Unlock()
		l.subscribe(ctx, id)
	}
}

// every runs f(n) at each tick of period until ctx ends.
func every(ctx context.Context, period time.Duration, f func(n int)) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		f(n)
	}
}

// call sends one control request to a ready endpoint and counts it: in
// *done when it got want, else in failed under its cause. A request cut by
// the end of the load counts nowhere.
func (l *Load) call(ctx context.Context, method, path, body string, want int, failed *map[string]int, done *int) (string, bool) {
	ep, ok := l.pick()
	if !ok {
		l.fail(failed, "no endpoint")
		return "", false
	}
	code, answer, err := l.do(ctx, method, ep.Control+path, body)
	if ctx.Err() != nil {
		return "", false
	}
	if cause := failure(code, answer, err, want); cause != "" {
		l.fail(failed, cause)
		return "", false
	}
	l.mu.Lock()
	*done++
	l.mu.Unlock()
	return answer, true
}

func (l *Load) subscribe(ctx context.Context, id string) {
	ep, ok := l.pick()
	if !ok {
		l.fail(&l.counts.StreamFailed, "no endpoint")
		return
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+ep.Streaming+"/v1/streams/"+id, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := l.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		code, body := 0, ""
		if err == nil {
			code = resp.StatusCode
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			body = string(b)
		}
		if ctx.Err() == nil {
			l.fail(&l.counts.StreamFailed, failure(code, body, err, http.StatusOK))
		}
		return
	}
	owner, _, _ := strings.Cut(id, "/")
	s := &loadStream{owner: owner, resp: resp}
	l.mu.Lock()
	l.counts.StreamsOpened++
	l.open = append(l.open, s)
	var oldest *loadStream
	if len(l.open) > l.KeepStreams {
		oldest = l.open[0]
		oldest.closing = true
		l.open = l.open[1:]
	}
	l.mu.Unlock()
	if oldest != nil {
		_ = oldest.resp.Body.Close()
	}
	go l.read(s)
}

// read counts a stream's updates and, if it ends while the client still
// wants it, why it was cut.
func (l *Load) read(s *loadStream) {
	r := bufio.NewReader(s.resp.Body)
	var err error
	for {
		var line string
		if line, err = r.ReadString('\n'); err != nil {
			break
		}
		if line == "event: update\n" {
			l.mu.Lock()
			l.counts.Updates++
			s.updates++
			l.mu.Unlock()
		}
	}
	_ = s.resp.Body.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.closing {
		return
	}
	for i, o := range l.open {
		if o == s {
			l.open = append(l.open[:i], l.open[i+1:]...)
			break
		}
	}
	cause := "ended"
	if !errors.Is(err, io.EOF) {
		cause = classify(err)
	}
	l.counts.StreamsCut[cause]++
	l.counts.CutOwners[s.owner]++
}

func (l *Load) writes(ctx context.Context) {
	every(ctx, l.WriteEvery, func(n int) {
		l.call(ctx, http.MethodPatch, "/v1/inputs/posts", `[["k`+strconv.Itoa(n%10)+`",[`+strconv.Itoa(n)+`]]]`, http.StatusOK, &l.counts.WriteFailed, &l.counts.Writes)
	})
}

func (l *Load) do(ctx context.Context, method, addr, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), err
}

func (l *Load) fail(m *map[string]int, cause string) {
	l.mu.Lock()
	(*m)[cause]++
	l.mu.Unlock()
}

// failure names what went wrong with an answer, or "" when it is want.
func failure(code int, body string, err error, want int) string {
	if err != nil {
		return classify(err)
	}
	if code == want {
		return ""
	}
	var e struct{ Reason string }
	_ = json.Unmarshal([]byte(body), &e)
	return strings.TrimSpace(strconv.Itoa(code) + " " + e.Reason)
}

func classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "eof"
	}
	return "transport: " + err.Error()
}
