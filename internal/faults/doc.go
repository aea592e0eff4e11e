// Package faults holds headcount's end-to-end fault tests: real headcount
// processes on loopback under a Go load client, while NATS goes away, a
// follower dies, a router is rolled, a service scales from zero under
// KEDA's client, or a NATS cluster node dies; and the soak (`task soak`)
// that does all of it in a loop. The figures are in docs/reliability.md.
package faults
