// Package deletioncost keeps the controller.kubernetes.io/pod-deletion-cost
// annotation of every follower pod equal to its live instances, so that a
// scale-down removes the emptiest follower and breaks the fewest streams.
package deletioncost

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/defaults"
)

// Annotation is the ReplicaSet controller's hint: pods with a lower cost are
// deleted first on scale-down.
const Annotation = "controller.kubernetes.io/pod-deletion-cost"

// Config bounds the load the controller puts on the API server;
// DefaultConfig holds the defaults, which New also gives zero fields.
type Config struct {
	// QPS and Burst limit the patches.
	QPS   float64
	Burst int
	// Every bounds how often a changed service's pods are compared:
	// heartbeats rarely change a count, and a pass is O(followers).
	Every  time.Duration
	Logger *slog.Logger
}

// DefaultConfig is the controller's defaults, the flags' included.
func DefaultConfig() Config { return Config{QPS: 5, Burst: 10, Every: time.Second} }

// Fleet is what the controller reads: the members of each service, from the
// process's one fleet.View.
type Fleet interface {
	Members(service string) []fleet.Member
	Member(service, follower string) (fleet.Member, bool)
	Services() []string
}

// Controller patches pods whose cost differs from the last value it wrote.
type Controller struct {
	pods    corev1client.PodsGetter
	view    Fleet
	cfg     Config
	limiter *rate.Limiter
	patches *prometheus.CounterVec

	wake  chan struct{}
	mu    sync.Mutex
	dirty map[string]struct{}

	// written is the cost last written per service and pod; only Run touches it.
	written map[string]map[pod]int32
}

type pod struct{ namespace, name string }

// New returns a controller of the pods of view's followers, patched
// through pods (a clientset's CoreV1()): the controller's only use of the
// API server is one PATCH per changed pod.
func New(pods corev1client.PodsGetter, view Fleet, cfg Config) *Controller {
	def := DefaultConfig()
	defaults.Positive(&cfg.QPS, def.QPS)
	defaults.Positive(&cfg.Burst, def.Burst)
	defaults.Positive(&cfg.Every, def.Every)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &Controller{
		pods: pods, view: view, cfg: cfg,
		limiter: rate.NewLimiter(rate.Limit(cfg.QPS), cfg.Burst),
		patches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_scaler_deletion_cost_patches_total",
			Help: "Pod deletion-cost patches, by result (ok, not_found, error).",
		}, []string{"result"}),
		wake:    make(chan struct{}, 1),
		dirty:   map[string]struct{}{},
		written: map[string]map[pod]int32{},
	}
}

// Collector exports the patch counts.
func (c *Controller) Collector() prometheus.Collector { return c.patches }

// Notify marks service's pods for comparison; cheap, for fleet.Watcher's OnChange.
func (c *Controller) Notify(service string) {
	c.mu.Lock()
	c.dirty[service] = struct{}{}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run patches changed pods until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.wake:
		}
		c.mu.Lock()
		dirty := c.dirty
		c.dirty = map[string]struct{}{}
		c.mu.Unlock()
		for service := range dirty {
			if !c.sync(ctx, service) {
				c.Notify(service) // retry on the next pass
			}
		}
		c.forgetGone()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.cfg.Every):
		}
	}
}

// sync patches the pods of service whose cost changed; false means some
// patch failed and the service needs another pass.
func (c *Controller) sync(ctx context.Context, service string) bool {
	before := c.written[service]
	now := make(map[pod]int32, len(before))
	ok := true
	for _, m := range c.view.Members(service) {
		if m.Role != fleet.RoleFollower || m.Pod == "" || m.Namespace == "" {
			continue
		}
		p := pod{m.Namespace, m.Pod}
		last, seen := before[p]
		if seen {
			now[p] = last
		}
		if seen && last == cost(m.Instances) {
			continue
		}
		if c.limiter.Wait(ctx) != nil {
			return true // shutting down
		}
		// The wait may have been long: write the freshest count.
		if fresh, found := c.view.Member(service, m.Follower); found && fresh.Pod == m.Pod {
			m = fresh
		}
		want := cost(m.Instances)
		if seen && last == want {
			continue
		}
		switch err := c.patch(ctx, p, want); {
		case err == nil:
			c.patches.WithLabelValues("ok").Inc()
			now[p] = want
		case apierrors.IsNotFound(err):
			// Not a pod of this cluster (or gone): remember, so that it is
			// not asked for again until its count changes.
			c.patches.WithLabelValues("not_found").Inc()
			now[p] = want
		default:
			c.patches.WithLabelValues("error").Inc()
			c.cfg.Logger.Warn("pod deletion cost not patched", "namespace", p.namespace, "pod", p.name, "err", err)
			ok = false
		}
	}
	c.written[service] = now
	return ok
}

func (c *Controller) patch(ctx context.Context, p pod, value int32) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{Annotation: strconv.Itoa(int(value))}}})
	if err != nil {
		return err
	}
	_, err = c.pods.Pods(p.namespace).Patch(ctx, p.name, types.MergePatchType, body, metav1.PatchOptions{})
	return err
}

// forgetGone drops what was written for services no longer in the view.
func (c *Controller) forgetGone() {
	if len(c.written) == 0 {
		return
	}
	live := map[string]bool{}
	for _, s := range c.view.Services() {
		live[s] = true
	}
	for s := range c.written {
		if !live[s] {
			delete(c.written, s)
		}
	}
}

// cost is the annotation's value: an int32.
func cost(instances int64) int32 { return int32(min(instances, math.MaxInt32)) }
