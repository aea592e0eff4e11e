package router

import (
	"os"
	"strings"

	"github.com/headcount-dev/headcount/fleet"
)

// DefaultID derives a router id from the host name (a pod name in
// Kubernetes), made into a DNS-1123 label; "router" if nothing is left.
func DefaultID() string {
	host, _ := os.Hostname()
	return Label(host, "router")
}

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
	if s = strings.Trim(s, "-"); fleet.ValidName(s) {
		return s
	}
	return fallback
}
