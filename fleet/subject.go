package fleet

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the first token of every headcount subject.
const DefaultPrefix = "headcount"

// Subject kinds: the token after <prefix>.<service>.
const (
	KindReport   = "report"
	KindPlaced   = "placed"
	KindDemand   = "demand"
	KindRollCall = "rollcall"
)

// Subjects builds and parses the subjects of one prefix.
type Subjects struct{ Prefix string }

// NewSubjects validates prefix: one or more NATS tokens without wildcards.
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		return Subjects{}, fmt.Errorf("subject prefix is empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return Subjects{}, fmt.Errorf("subject prefix %q: tokens must be non-empty, without wildcards or spaces", prefix)
		}
	}
	return Subjects{Prefix: prefix}, nil
}

// Report is where follower publishes its reports.
func (s Subjects) Report(service, follower string) string {
	return s.Prefix + "." + service + "." + KindReport + "." + follower
}

// Placed is where routers announce placements on follower.
func (s Subjects) Placed(service, follower string) string {
	return s.Prefix + "." + service + "." + KindPlaced + "." + follower
}

// Demand is where router announces the creations it holds.
func (s Subjects) Demand(service, router string) string {
	return s.Prefix + "." + service + "." + KindDemand + "." + router
}

// RollCall asks every agent of service to report now; with service "" it
// asks every agent of every service.
func (s Subjects) RollCall(service string) string {
	if service == "" {
		return s.Prefix + "." + KindRollCall
	}
	return s.Prefix + "." + service + "." + KindRollCall
}

// Watch is the wildcard a view subscribes to for service ("" = every
// service): reports, placements, demand and move announcements.
func (s Subjects) Watch(service string) string {
	if service == "" {
		service = "*"
	}
	return s.Prefix + "." + service + ".*.*"
}

// Parse splits <prefix>.<service>.<kind>.<name>; ok is false for any other shape.
func (s Subjects) Parse(subject string) (service, kind, name string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.Prefix+".")
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}
