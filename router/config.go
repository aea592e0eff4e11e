package router

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/placement"
)

// Config says which service a router serves and how it behaves under load.
// DefaultConfig holds every default; New takes a zero duration or size from
// it too, but Retries 0 means no retry.
type Config struct {
	Subjects fleet.Subjects // default prefix "headcount"
	Service  string         // required: the service whose followers this router fronts
	ID       string         // this router's DNS-1123 id; default DefaultID()
	// CompatPrefix, e.g. "/streams", also serves streams on
	// GET <prefix>/<follower>/<uuid>, the path of Skip's HAProxy examples.
	CompatPrefix string
	MaxBody      int64 // largest request body buffered (413 above)
	// HoldTimeout is how long a creation waits for a ready follower: longer
	// than a leader's restart and its followers' after it.
	HoldTimeout time.Duration
	HoldQueue   int // how many creations may wait at once
	// WriteRetry is how long a write that never reached the leader (none
	// registered, or its connection refused) is tried again before 503.
	WriteRetry time.Duration
	// Retries is how many other followers a creation tries after a refused
	// connection or a 503; 0 for none.
	Retries     int
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for an upstream's response headers, so a
	// hung follower cannot hold requests forever.
	HeaderTimeout time.Duration
	// CreateTimeout bounds the wait for a follower's response headers to a
	// creation while another follower may be tried: a creation answers in
	// milliseconds, so a follower this slow is hung or drowning (the last
	// try waits HeaderTimeout).
	CreateTimeout time.Duration
	// SlowStart bounds the placements a follower may have that it has not
	// reported yet (fleet.Member.Pending, every router's): past it a creation
	// that was held goes to another follower or waits on for the next report,
	// so that the creations held during a leader's restart spread over the
	// followers as they come up instead of landing on the first one ready.
	// 0: no bound.
	SlowStart  int
	RetryAfter time.Duration // advertised on 503 answers
	DemandTTL  time.Duration // ttl of the demand events published while holding
	// ForgetAfter is how long a follower that left is remembered, so that
	// its instance ids get 410 Gone rather than 404.
	ForgetAfter time.Duration
	AccessLog   bool       // log every request at info level
	Moves       MoveConfig // live stream moves (move.go)
	Placement   PlacementConfig
	// Registry receives the router's metrics; default a fresh ops.NewRegistry().
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// DefaultConfig is the router's defaults, the flags' included.
func DefaultConfig() Config {
	return Config{
		Subjects:      fleet.Subjects{Prefix: fleet.DefaultPrefix},
		ID:            DefaultID(),
		MaxBody:       1 << 20,
		HoldTimeout:   2 * time.Minute,
		WriteRetry:    15 * time.Second,
		HoldQueue:     1000,
		Retries:       2,
		DialTimeout:   2 * time.Second,
		HeaderTimeout: 30 * time.Second,
		CreateTimeout: 10 * time.Second,
		SlowStart:     3,
		RetryAfter:    time.Second,
		DemandTTL:     3 * time.Second,
		ForgetAfter:   10 * time.Minute,
		Moves:         DefaultMoveConfig(),
		Placement:     PlacementConfig{Policy: PlacementLeastLoaded, Bound: placement.DefaultBalance},
	}
}

func (c *Config) defaults() error {
	def := DefaultConfig()
	if c.Subjects.Prefix == "" {
		c.Subjects = def.Subjects
	}
	if !fleet.ValidName(c.Service) {
		return fmt.Errorf("service %q is not a DNS-1123 label", c.Service)
	}
	if c.ID == "" {
		c.ID = def.ID
	}
	if !fleet.ValidName(c.ID) {
		return fmt.Errorf("router id %q is not a DNS-1123 label", c.ID)
	}
	if p := c.CompatPrefix; p != "" && (!strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") ||
		strings.ContainsAny(p, "{}") || p == "/v1/streams") {
		return fmt.Errorf("compat prefix %q: want a path such as /streams, without trailing slash", p)
	}
	setDefault(&c.MaxBody, def.MaxBody)
	setDefault(&c.HoldTimeout, def.HoldTimeout)
	setDefault(&c.HoldQueue, def.HoldQueue)
	setDefault(&c.WriteRetry, def.WriteRetry)
	setDefault(&c.DialTimeout, def.DialTimeout)
	setDefault(&c.HeaderTimeout, def.HeaderTimeout)
	setDefault(&c.CreateTimeout, def.CreateTimeout)
	setDefault(&c.RetryAfter, def.RetryAfter)
	setDefault(&c.DemandTTL, def.DemandTTL)
	setDefault(&c.ForgetAfter, def.ForgetAfter)
	if err := errors.Join(
		atLeast(0, field[int]{"Retries", c.Retries}, field[int]{"HoldQueue", c.HoldQueue}, field[int]{"SlowStart", c.SlowStart}),
		atLeast(0, field[int64]{"MaxBody", c.MaxBody}),
		atLeast(0, field[time.Duration]{"HoldTimeout", c.HoldTimeout}, field[time.Duration]{"WriteRetry", c.WriteRetry},
			field[time.Duration]{"DialTimeout", c.DialTimeout},
			field[time.Duration]{"HeaderTimeout", c.HeaderTimeout}, field[time.Duration]{"CreateTimeout", c.CreateTimeout},
			field[time.Duration]{"RetryAfter", c.RetryAfter},
			field[time.Duration]{"ForgetAfter", c.ForgetAfter}),
		within(field[time.Duration]{"DemandTTL", c.DemandTTL}, fleet.MinTTLMillis*time.Millisecond, fleet.MaxTTLMillis*time.Millisecond),
	); err != nil {
		return err
	}
	if err := c.Moves.defaults(); err != nil {
		return fmt.Errorf("Moves.%w", err)
	}
	if err := c.Placement.defaults(); err != nil {
		return fmt.Errorf("Placement.%w", err)
	}
	if c.Registry == nil {
		c.Registry = ops.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// MoveConfig says how a router moves the live streams it proxies between
// followers (docs/moving.md). Zero values take the defaults on each field.
type MoveConfig struct {
	// Timeout bounds one move: creation, stream and init on the new follower
	// (default 10 s).
	Timeout time.Duration
	// Concurrency bounds the moves in flight at once (default 64).
	Concurrency int
	// MovedTTL is how long a moved id keeps reaching the new owner after the
	// last announcement; the router proxying the stream republishes it every
	// quarter of it (default 2 min, more than Skip's 30 s instance ttl).
	MovedTTL time.Duration
	// MaxMoved bounds the moved ids a router remembers (default 100,000).
	MaxMoved int
	// RebalanceThreshold starts a rebalance when the most loaded ready
	// follower carries more than this times the mean (default 1.25); it stops
	// at RebalanceStop (default 1 + (threshold-1)/5) or when one move would not
	// narrow the spread.
	RebalanceThreshold, RebalanceStop float64
	// RebalanceRate bounds this router's rebalancing moves per second
	// (default 20).
	RebalanceRate float64
	NoRebalance   bool // drain and death moves only
	// OutageWait is how long a stream whose owner is gone waits for a
	// follower to rebuild it on when none can (the whole service is down,
	// e.g. its leader restarting and its followers with it); then it ends
	// (default 2 min).
	OutageWait time.Duration
	// KeepAlive is the period of the SSE comments a waiting stream gets, so
	// that clients and proxies do not time it out (default 15 s).
	KeepAlive time.Duration
	// Grace is how long a follower may stay not ready without leaving (hung,
	// its health check failing) while a peer stays ready before its streams
	// are moved (default 1 s: the sidecar's failure threshold already took
	// about 3 s, and the two together stay within 5 s of a hang).
	Grace time.Duration
}

// DefaultMoveConfig is the move configuration a zero field takes.
func DefaultMoveConfig() MoveConfig {
	return MoveConfig{Timeout: 10 * time.Second, Concurrency: 64, MovedTTL: 2 * time.Minute, MaxMoved: 100_000,
		RebalanceThreshold: 1.25, RebalanceStop: 1.05, RebalanceRate: 20, OutageWait: 2 * time.Minute, KeepAlive: 15 * time.Second, Grace: time.Second}
}

func (c *MoveConfig) defaults() error {
	def := DefaultMoveConfig()
	setDefault(&c.Timeout, def.Timeout)
	setDefault(&c.Concurrency, def.Concurrency)
	setDefault(&c.MovedTTL, def.MovedTTL)
	setDefault(&c.MaxMoved, def.MaxMoved)
	setDefault(&c.OutageWait, def.OutageWait)
	setDefault(&c.KeepAlive, def.KeepAlive)
	setDefault(&c.Grace, def.Grace)
	if c.RebalanceThreshold == 0 {
		c.RebalanceThreshold = def.RebalanceThreshold
	}
	if c.RebalanceStop == 0 {
		c.RebalanceStop = 1 + (c.RebalanceThreshold-1)/5
	}
	if c.RebalanceRate == 0 {
		c.RebalanceRate = def.RebalanceRate
	}
	if c.RebalanceThreshold <= 1 {
		return fmt.Errorf("RebalanceThreshold %g: must be above 1", c.RebalanceThreshold)
	}
	return errors.Join(
		within(field[float64]{"RebalanceStop", c.RebalanceStop}, 1, c.RebalanceThreshold),
		within(field[time.Duration]{"MovedTTL", c.MovedTTL}, fleet.MinTTLMillis*time.Millisecond, fleet.MaxTTLMillis*time.Millisecond),
		atLeast(1, field[int]{"Concurrency", c.Concurrency}, field[int]{"MaxMoved", c.MaxMoved}),
		atLeast(0, field[time.Duration]{"Timeout", c.Timeout}, field[time.Duration]{"OutageWait", c.OutageWait},
			field[time.Duration]{"KeepAlive", c.KeepAlive}, field[time.Duration]{"Grace", c.Grace}),
		atLeast(0, field[float64]{"RebalanceRate", c.RebalanceRate}),
	)
}

// PlacementConfig says where new instances go (placement.go,
// docs/placement.md). Zero values take the defaults on each field.
type PlacementConfig struct {
	// Policy is PlacementLeastLoaded (the default) or PlacementAffinity
	// (every instance of a definition on its own follower, within the
	// bound). Affinity is not the default yet: with real Skip its
	// placements and the rebalancer can move a stream twice during a
	// drain (docs/placement.md, Limits).
	Policy string
	// Bound is affinity's c: a follower takes a definition while its cost
	// is at most c × the mean cost (default placement.DefaultBalance, ≥ 1).
	Bound float64
	// Target is the instances a follower takes under affinity whatever the
	// mean while it holds fewer and reports no capacity: the per-replica
	// target, so that an idle fleet keeps a hot definition whole (0: none).
	Target int64
}

func (c *PlacementConfig) defaults() error {
	if c.Policy == "" {
		c.Policy = PlacementLeastLoaded
	}
	if c.Bound == 0 {
		c.Bound = placement.DefaultBalance
	}
	if c.Policy != PlacementAffinity && c.Policy != PlacementLeastLoaded {
		return fmt.Errorf("%s %q: want %s or %s", "Policy", c.Policy, PlacementAffinity, PlacementLeastLoaded)
	}
	if math.IsNaN(c.Bound) {
		return fmt.Errorf("%s %v: want a number", "Bound", c.Bound)
	}
	return errors.Join(
		within(field[float64]{"Bound", c.Bound}, 1, math.MaxFloat64),
		atLeast(0, field[int64]{"Target", c.Target}),
	)
}

// field is a configuration field's name and value, for errors that name both.
type field[T int | int64 | float64 | time.Duration] struct {
	name  string
	value T
}

// atLeast names the first field below least.
func atLeast[T int | int64 | float64 | time.Duration](least T, fields ...field[T]) error {
	for _, f := range fields {
		if f.value < least {
			return fmt.Errorf("%s %v: must be at least %v", f.name, f.value, least)
		}
	}
	return nil
}

// within names f unless it is in [low, high].
func within[T int | int64 | float64 | time.Duration](f field[T], low, high T) error {
	if f.value < low || f.value > high {
		return fmt.Errorf("%s %v: must be within %v..%v", f.name, f.value, low, high)
	}
	return nil
}
