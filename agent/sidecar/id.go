package sidecar

import (
	"strings"

	"github.com/headcount-dev/headcount/fleet"
)

// ID is a resource instance id as a Skip follower hands it out: "<uuid>", or
// "<prefix>/<uuid>" when it runs with SKIP_RESOURCE_PREFIX. Skip itself only
// routes the bare key, so the sidecar strips the prefix of ids it knows.
type ID struct {
	Prefix string // "" when the follower has no prefix
	Key    string // the uuid Skip knows the instance by
}

func (id ID) String() string {
	if id.Prefix == "" {
		return id.Key
	}
	return id.Prefix + "/" + id.Key
}

// Bounds on what a follower may call an instance; anything else is not an
// id this sidecar tracks.
const (
	maxPrefix = 253
	maxID     = maxPrefix + 1 + fleet.MaxInstanceKey
)

// ParseID parses "<key>" or "<prefix>/<key>". The key is checked as the
// router checks it (fleet.ValidInstanceKey); the prefix is any 1–253 visible
// ASCII characters other than '/'.
func ParseID(s string) (ID, bool) {
	if len(s) > maxID {
		return ID{}, false
	}
	prefix, key, found := strings.Cut(s, "/")
	if !found {
		prefix, key = "", s
	} else if !validPrefix(prefix) {
		return ID{}, false
	}
	if !fleet.ValidInstanceKey(key) {
		return ID{}, false
	}
	return ID{Prefix: prefix, Key: key}, true
}

func validPrefix(s string) bool {
	if len(s) == 0 || len(s) > maxPrefix {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return false
		}
	}
	return true
}
