// Package fleet is headcount's shared vocabulary: the messages exchanged on
// NATS, their validation, and the live view of a service's followers that
// routers, scalers and adapters build from those messages.
package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Version is the only Report version this build understands.
const Version = 1

// Bounds a valid Report stays within. They are generous on purpose: they catch
// corruption and abuse, not large deployments.
const (
	MaxMessageBytes = 8 << 10
	MaxInstances    = 10_000_000
	MaxCreated      = 1 << 50
	MaxCapacity     = MaxInstances
	MinTTLMillis    = 100
	MaxTTLMillis    = 10 * 60 * 1000
	maxIncarnation  = 64
	maxPodName      = 253
)

// Role tells whether a member serves resource instances or holds the inputs.
type Role string

const (
	RoleLeader   Role = "leader"
	RoleFollower Role = "follower"
)

// State is a member's lifecycle: starting → ready → draining → gone.
type State string

const (
	StateStarting State = "starting"
	StateReady    State = "ready"
	StateDraining State = "draining"
	StateGone     State = "gone"
)

// Report is what an agent publishes on headcount.<service>.report.<follower>.
// Field names are the wire contract: add fields, never rename them.
type Report struct {
	V           int    `json:"v"`
	Service     string `json:"service"`
	Follower    string `json:"follower"`
	Incarnation string `json:"incarnation"`
	Role        Role   `json:"role"`
	State       State  `json:"state"`
	Control     string `json:"control"`
	Streaming   string `json:"streaming"`
	Instances   int64  `json:"instances"`
	Created     int64  `json:"created"`
	Capacity    int64  `json:"capacity,omitempty"`
	Seq         uint64 `json:"seq"`
	TTLMillis   int64  `json:"ttl_ms"`
	Pod         string `json:"pod,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	// MovedOut counts the instances this incarnation deleted because a
	// router moved them elsewhere (a DELETE carrying HeaderMovedOut); it never
	// decreases. Views stop discounting a move's old instance when it rises.
	MovedOut int64 `json:"moved_out,omitempty"`
	// Graphs counts the distinct definitions (fleet.DefinitionKey) among the
	// live instances: Skip computes one resource graph per definition and
	// every instance of it shares that graph. 0 with instances is a member
	// that does not count them (an older agent): placement then assumes no
	// sharing (docs/placement.md).
	Graphs int64 `json:"graphs,omitempty"`
}

// Placed is what a router publishes on headcount.<service>.placed.<follower>
// after giving that follower N new instances.
type Placed struct {
	Router      string `json:"router"`
	Follower    string `json:"follower"`
	Incarnation string `json:"incarnation"`
	N           int64  `json:"n"`
}

// Demand is what a router publishes on headcount.<service>.demand.<router>
// while it holds creations because no follower is ready.
type Demand struct {
	Router    string `json:"router"`
	Pending   int64  `json:"pending"`
	TTLMillis int64  `json:"ttl_ms"`
}

// Reasons a message is rejected; they label the drop metric.
const (
	ReasonOversize  = "oversize"
	ReasonJSON      = "bad_json"
	ReasonVersion   = "version"
	ReasonName      = "bad_name"
	ReasonSubject   = "subject_mismatch"
	ReasonRole      = "bad_role"
	ReasonState     = "bad_state"
	ReasonCount     = "bad_count"
	ReasonAddress   = "bad_address"
	ReasonTTL       = "bad_ttl"
	ReasonForbidden = "address_not_allowed"
)

// InvalidError says why a message was rejected.
type InvalidError struct {
	Reason string // one of the Reason* constants
	Detail string
}

func (e *InvalidError) Error() string { return e.Reason + ": " + e.Detail }

func invalid(reason, format string, args ...any) error {
	return &InvalidError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the drop reason of err, or "other" when err did not come
// from validation.
func ReasonOf(err error) string {
	var ie *InvalidError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return "other"
}

// ValidName reports whether s is a DNS-1123 label, which makes it a single
// NATS subject token.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// AddressPolicy restricts the addresses followers may advertise. The zero
// value allows any well-formed host:port.
type AddressPolicy struct {
	// Allowed, when non-empty, requires every address to be an IP inside one
	// of these prefixes (hostnames are then refused: they could resolve anywhere).
	Allowed []netip.Prefix
}

// ParseCIDRs parses a list of CIDRs such as "10.0.0.0/8,127.0.0.0/8".
func ParseCIDRs(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("allowed CIDR %q: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (p AddressPolicy) check(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalid(ReasonAddress, "%s %q is not host:port", field, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return invalid(ReasonAddress, "%s %q has no valid port", field, addr)
	}
	ip, ipErr := netip.ParseAddr(host)
	if ipErr != nil && !validHostname(host) {
		return invalid(ReasonAddress, "%s %q has no valid host", field, addr)
	}
	if len(p.Allowed) == 0 {
		return nil
	}
	if ipErr == nil {
		ip = ip.Unmap()
		for _, pre := range p.Allowed {
			if pre.Contains(ip) {
				return nil
			}
		}
	}
	return invalid(ReasonForbidden, "%s %q is outside the allowed CIDRs", field, addr)
}

// validHostname accepts DNS names made of DNS-1123 labels (case-insensitive).
func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, label := range bytes.Split(bytes.ToLower([]byte(h)), []byte{'.'}) {
		if !ValidName(string(label)) {
			return false
		}
	}
	return true
}

// DecodeReport parses and validates a report received on subject. service and
// follower are the subject's tokens; the body must agree with them.
func DecodeReport(data []byte, service, follower string, policy AddressPolicy) (Report, error) {
	var r Report
	if err := decode(data, &r); err != nil {
		return Report{}, err
	}
	if err := r.Validate(policy); err != nil {
		return Report{}, err
	}
	if r.Service != service || r.Follower != follower {
		return Report{}, invalid(ReasonSubject, "body names %s/%s, subject %s/%s", r.Service, r.Follower, service, follower)
	}
	return r, nil
}

// Validate checks every field of r against the contract.
func (r *Report) Validate(policy AddressPolicy) error {
	switch {
	case r.V != Version:
		return invalid(ReasonVersion, "version %d, want %d", r.V, Version)
	case !ValidName(r.Service):
		return invalid(ReasonName, "service %q is not a DNS-1123 label", r.Service)
	case !ValidName(r.Follower):
		return invalid(ReasonName, "follower %q is not a DNS-1123 label", r.Follower)
	case r.Incarnation == "" || len(r.Incarnation) > maxIncarnation || !printable(r.Incarnation):
		return invalid(ReasonName, "incarnation must be 1-%d printable characters", maxIncarnation)
	case r.Role != RoleLeader && r.Role != RoleFollower:
		return invalid(ReasonRole, "role %q, want leader or follower", r.Role)
	case r.Instances < 0 || r.Instances > MaxInstances:
		return invalid(ReasonCount, "instances %d outside 0..%d", r.Instances, MaxInstances)
	case r.Created < 0 || r.Created > MaxCreated:
		return invalid(ReasonCount, "created %d outside 0..%d", r.Created, int64(MaxCreated))
	case r.MovedOut < 0 || r.MovedOut > MaxCreated:
		return invalid(ReasonCount, "moved_out %d outside 0..%d", r.MovedOut, int64(MaxCreated))
	case r.Graphs < 0 || r.Graphs > r.Instances:
		// A graph lives while one of its instances does: never more graphs
		// than instances.
		return invalid(ReasonCount, "graphs %d outside 0..instances (%d)", r.Graphs, r.Instances)
	case r.Capacity < 0 || r.Capacity > MaxCapacity:
		return invalid(ReasonCount, "capacity %d outside 0..%d", r.Capacity, MaxCapacity)
	case r.TTLMillis < MinTTLMillis || r.TTLMillis > MaxTTLMillis:
		return invalid(ReasonTTL, "ttl_ms %d outside %d..%d", r.TTLMillis, MinTTLMillis, MaxTTLMillis)
	case len(r.Pod) > maxPodName || (r.Pod != "" && !validHostname(r.Pod)):
		return invalid(ReasonName, "pod %q is not a DNS-1123 name", r.Pod)
	case r.Namespace != "" && !ValidName(r.Namespace):
		return invalid(ReasonName, "namespace %q is not a DNS-1123 label", r.Namespace)
	}
	switch r.State {
	case StateGone:
		return nil // a deregistration needs no addresses
	case StateStarting, StateReady, StateDraining:
	default:
		return invalid(ReasonState, "state %q, want starting, ready, draining or gone", r.State)
	}
	if err := policy.check("control", r.Control); err != nil {
		return err
	}
	return policy.check("streaming", r.Streaming)
}

// DecodePlaced parses and validates a placement event received on
// headcount.<service>.placed.<follower>.
func DecodePlaced(data []byte, follower string) (Placed, error) {
	var p Placed
	if err := decode(data, &p); err != nil {
		return Placed{}, err
	}
	switch {
	case p.Follower != follower:
		return Placed{}, invalid(ReasonSubject, "body names follower %q, subject %q", p.Follower, follower)
	case !ValidName(p.Router):
		return Placed{}, invalid(ReasonName, "router %q is not a DNS-1123 label", p.Router)
	case p.Incarnation == "" || len(p.Incarnation) > maxIncarnation || !printable(p.Incarnation):
		return Placed{}, invalid(ReasonName, "incarnation must be 1-%d printable characters", maxIncarnation)
	case p.N < 1 || p.N > MaxInstances:
		return Placed{}, invalid(ReasonCount, "n %d outside 1..%d", p.N, MaxInstances)
	}
	return p, nil
}

// DecodeDemand parses and validates a demand event received on
// headcount.<service>.demand.<router>.
func DecodeDemand(data []byte, router string) (Demand, error) {
	var d Demand
	if err := decode(data, &d); err != nil {
		return Demand{}, err
	}
	switch {
	case d.Router != router:
		return Demand{}, invalid(ReasonSubject, "body names router %q, subject %q", d.Router, router)
	case d.Pending < 0 || d.Pending > MaxInstances:
		return Demand{}, invalid(ReasonCount, "pending %d outside 0..%d", d.Pending, MaxInstances)
	case d.TTLMillis < MinTTLMillis || d.TTLMillis > MaxTTLMillis:
		return Demand{}, invalid(ReasonTTL, "ttl_ms %d outside %d..%d", d.TTLMillis, MinTTLMillis, MaxTTLMillis)
	}
	return d, nil
}

// decode rejects oversize bodies before parsing them, and anything that is
// not exactly one JSON object of the right field types (json.Unmarshal also
// refuses trailing data). Unknown fields are accepted so that newer agents
// may add some.
func decode(data []byte, v any) error {
	if len(data) > MaxMessageBytes {
		return invalid(ReasonOversize, "%d bytes, limit %d", len(data), MaxMessageBytes)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return invalid(ReasonJSON, "%v", err)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// IdentityPath is where an agent answers a verification probe on its control
// port: GET IdentityPath?nonce=<n> returns its Identity with the nonce echoed,
// so a router can tell that the address answers as that incarnation now.
const IdentityPath = "/headcount/v1/identity"

// Identity is an agent's answer to a verification probe.
type Identity struct {
	Service     string `json:"service"`
	Follower    string `json:"follower"`
	Incarnation string `json:"incarnation"`
	Nonce       string `json:"nonce"`
}

// ValidNonce accepts the probe nonces routers send: 16 to 64 hex digits.
func ValidNonce(s string) bool {
	if len(s) < 16 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
