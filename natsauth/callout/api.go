package callout

import (
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsapi"
)

// Bindings lists the grants that reach service, as --bind spells them:
// its own (member, router, decider, reader or observer bound to it) and
// those of every service (reader, observer).
func (s *Service) Bindings(service string) []string {
	out := []string{}
	for _, b := range s.cfg.Bindings {
		if b.Service != "" && b.Service != service {
			continue
		}
		grant := b.Namespace + "/" + b.ServiceAccount + "=" + string(b.Role)
		if b.Service != "" {
			grant += ":" + b.Service
		}
		out = append(out, grant)
	}
	slices.Sort(out)
	return out
}

// ServeAPI registers the callout on nc as the micro service
// headcount-callout, named id, with the endpoint bindings
// (`nats req <prefix>.<service>.api.callout.bindings ”`). Stop it before nc closes.
func (s *Service) ServeAPI(nc *nats.Conn, subjects fleet.Subjects, id string) (micro.Service, error) {
	return natsapi.Register(nc, natsapi.Config{
		Subjects: subjects, Component: natsapi.Callout, ID: id,
		Description: "NATS auth callout: ServiceAccount tokens to per-pod grants",
	}, natsapi.PerService(subjects, natsapi.Callout, "bindings", func(service string) (any, error) { return s.Bindings(service), nil }))
}
