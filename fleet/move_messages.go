package fleet

import (
	"encoding/base64"
	"strings"
)

// KindMoved is the subject kind of move announcements.
const KindMoved = "moved"

// Moved is what a router publishes on <prefix>.<service>.moved.<router> when
// it has moved a live stream: clients may still use the instance id From,
// which every router then sends to To. It is republished while the stream is
// open and forgotten TTLMillis after the last time it was heard.
type Moved struct {
	Router    string `json:"router"`
	From      string `json:"from"` // "<follower>/<key>": the id the client was given
	To        string `json:"to"`   // "<follower>/<key>": the instance serving it now
	TTLMillis int64  `json:"ttl_ms"`
}

// Moved is where router announces the streams it moved.
func (s Subjects) Moved(service, router string) string {
	return s.Prefix + "." + service + "." + KindMoved + "." + router
}

// DecodeMoved parses and validates a move announcement received on
// <prefix>.<service>.moved.<router>.
func DecodeMoved(data []byte, router string) (Moved, error) {
	var m Moved
	if err := decode(data, &m); err != nil {
		return Moved{}, err
	}
	_, _, fromOK := SplitInstanceID(m.From)
	_, _, toOK := SplitInstanceID(m.To)
	switch {
	case m.Router != router:
		return Moved{}, invalid(ReasonSubject, "body names router %q, subject %q", m.Router, router)
	case !fromOK || !toOK:
		return Moved{}, invalid(ReasonName, "from %q and to %q must be <follower>/<key> ids", m.From, m.To)
	case m.From == m.To:
		return Moved{}, invalid(ReasonName, "from and to are the same id %q", m.From)
	case m.TTLMillis < MinTTLMillis || m.TTLMillis > MaxTTLMillis:
		return Moved{}, invalid(ReasonTTL, "ttl_ms %d outside %d..%d", m.TTLMillis, MinTTLMillis, MaxTTLMillis)
	}
	return m, nil
}

// The follower side (agent library, sidecar, demo) remembers the resource
// and params each instance was created with, and returns them on the 200 of
// the instance's stream in these headers, so that whichever router proxies
// the stream can rebuild the instance on another follower. Routers strip
// them before the client sees the response.
const (
	HeaderResource = "Headcount-Resource"
	HeaderParams   = "Headcount-Params" // base64url (unpadded) of the creation's body
)

// MaxParams bounds the params a follower returns in HeaderParams: an
// instance created with more is not movable, never refused.
const MaxParams = 64 << 10

// maxResource bounds a resource name in HeaderResource.
const maxResource = 256

// EncodeOrigin returns the header values for an instance created as
// POST /v1/streams/<resource> with body params; ok is false when it cannot
// be carried (then the follower sends no headers and the stream is not movable).
func EncodeOrigin(resource string, params []byte) (res, enc string, ok bool) {
	if !validResource(resource) || len(params) > MaxParams {
		return "", "", false
	}
	return resource, base64.RawURLEncoding.EncodeToString(params), true
}

// DecodeOrigin parses the headers EncodeOrigin made; ok is false when they
// are absent or malformed.
func DecodeOrigin(resource, params string) (string, []byte, bool) {
	if !validResource(resource) || len(params) > base64.RawURLEncoding.EncodedLen(MaxParams) {
		return "", nil, false
	}
	p, err := base64.RawURLEncoding.DecodeString(params)
	if err != nil {
		return "", nil, false
	}
	return resource, p, true
}

// validResource accepts one URL path segment of visible ASCII.
func validResource(s string) bool {
	return s != "" && len(s) <= maxResource && printable(s) && !strings.ContainsAny(s, "/?#%")
}

// KindMoving is the subject kind of moves under way.
const KindMoving = "moving"

// Moving is what a router publishes on <prefix>.<service>.moving.<router>
// when it starts moving N live instances off a follower's incarnation (N > 0)
// and when it gives such a move up (N < 0). Until the follower reports the old
// instance deleted (its moved_out rises) or TTLMillis pass, views count it
// out of that follower: the move's new instance, counted as a placement on
// its target from the start, is then the only one counted.
type Moving struct {
	Router      string `json:"router"`
	Follower    string `json:"follower"`
	Incarnation string `json:"incarnation"`
	N           int64  `json:"n"`
	TTLMillis   int64  `json:"ttl_ms"`
}

// Bounds of a Moving announcement: a router moves a few instances at a time,
// and an announcement that is never followed by its moved_out stops counting
// within MaxMovingTTLMillis.
const (
	MaxMovingN         = 1000
	MaxMovingTTLMillis = 60 * 1000
)

// HeaderMovedOut on a DELETE of an instance tells its follower that a router
// moved it elsewhere: the follower counts it in its report's moved_out.
const HeaderMovedOut = "Headcount-Moved-Out"

// Moving is where router announces the moves it starts and gives up.
func (s Subjects) Moving(service, router string) string {
	return s.Prefix + "." + service + "." + KindMoving + "." + router
}

// DecodeMoving parses and validates a moving announcement received on
// <prefix>.<service>.moving.<router>.
func DecodeMoving(data []byte, router string) (Moving, error) {
	var m Moving
	if err := decode(data, &m); err != nil {
		return Moving{}, err
	}
	switch {
	case m.Router != router:
		return Moving{}, invalid(ReasonSubject, "body names router %q, subject %q", m.Router, router)
	case !ValidName(m.Follower):
		return Moving{}, invalid(ReasonName, "follower %q is not a DNS-1123 label", m.Follower)
	case m.Incarnation == "" || len(m.Incarnation) > maxIncarnation || !printable(m.Incarnation):
		return Moving{}, invalid(ReasonName, "incarnation must be 1-%d printable characters", maxIncarnation)
	case m.N == 0 || m.N > MaxMovingN || m.N < -MaxMovingN:
		return Moving{}, invalid(ReasonCount, "n %d outside ±1..%d", m.N, MaxMovingN)
	case m.TTLMillis < MinTTLMillis || m.TTLMillis > MaxMovingTTLMillis:
		return Moving{}, invalid(ReasonTTL, "ttl_ms %d outside %d..%d", m.TTLMillis, MinTTLMillis, MaxMovingTTLMillis)
	}
	return m, nil
}
