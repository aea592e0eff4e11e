package fleet

import "strings"

// MaxInstanceKey bounds the uuid half of a resource instance id.
const MaxInstanceKey = 128

// ValidInstanceKey reports whether s can be the key of a resource instance
// id "<follower>/<key>": what Skip generates (a UUID today; older runtimes
// used other url-safe ids), checked loosely as 1–128 of [A-Za-z0-9_-], so it
// is always one URL path segment and one log token.
func ValidInstanceKey(s string) bool {
	if len(s) == 0 || len(s) > MaxInstanceKey {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// SplitInstanceID splits a router-facing instance id "<follower>/<key>".
func SplitInstanceID(id string) (follower, key string, ok bool) {
	follower, key, found := strings.Cut(id, "/")
	if !found || !ValidName(follower) || !ValidInstanceKey(key) {
		return "", "", false
	}
	return follower, key, true
}
