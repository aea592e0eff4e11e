package metricsadapter

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsapi"
)

// Status is what the adapter serves of one service: the external metric's
// value and the members behind the per-pod metric.
type Status struct {
	Service string         `json:"service"`
	Live    int64          `json:"live"`
	Members []fleet.Report `json:"members"`
}

// Status reads service from the view; it fails once the view is stale, as
// the metrics API does.
func (p *Provider) Status(service string) (Status, error) {
	if err := p.cfg.Link.Fresh(time.Now(), p.cfg.MaxStaleness); err != nil {
		return Status{}, err
	}
	st := Status{Service: service, Live: p.cfg.Fleet.Totals(service).Live(), Members: []fleet.Report{}}
	for _, m := range p.cfg.Fleet.Members(service) {
		st.Members = append(st.Members, m.Report)
	}
	return st, nil
}

// ServeAPI registers the adapter on nc as the micro service
// headcount-adapter, named id, with the endpoint status
// (`nats req <prefix>.<service>.api.adapter.status ”`). Stop it before nc closes.
func (p *Provider) ServeAPI(nc *nats.Conn, subjects fleet.Subjects, id string) (micro.Service, error) {
	return natsapi.Register(nc, natsapi.Config{
		Subjects: subjects, Component: natsapi.Adapter, ID: id,
		Description: "Kubernetes custom and external metrics API: live instances per pod and per workload",
	}, natsapi.PerService(subjects, natsapi.Adapter, "status", func(service string) (any, error) { return p.Status(service) }))
}
