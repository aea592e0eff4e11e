package fleet

import (
	"os"
	"strings"
)

// Label lowercases s, turns every other character into '-', and trims it
// to a valid DNS-1123 label; fallback when nothing valid remains.
func Label(s, fallback string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, s)
	if len(s) > 63 {
		s = s[:63]
	}
	if s = strings.Trim(s, "-"); ValidName(s) {
		return s
	}
	return fallback
}

// HostLabel is the host name (a pod name in Kubernetes) as a label: the
// default id of routers and members; fallback when nothing valid remains.
func HostLabel(fallback string) string {
	host, _ := os.Hostname()
	return Label(host, fallback)
}
