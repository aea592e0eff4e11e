package scaler

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsapi"
)

// ServeAPI registers the scaler on nc as the micro service headcount-scaler,
// named id, with the endpoint status: `nats req <prefix>.<service>.api.scaler.status ”`
// answers Status (one scaler replica answers). Stop the service before nc closes.
func (s *Scaler) ServeAPI(nc *nats.Conn, subjects fleet.Subjects, id string) (micro.Service, error) {
	return natsapi.Register(nc, natsapi.Config{
		Subjects: subjects, Component: natsapi.Scaler, ID: id,
		Description: "KEDA external scaler: a service's live instances, activity and replica targets",
	}, natsapi.PerService(subjects, natsapi.Scaler, "status", func(service string) (any, error) { return s.Status(service) }))
}
