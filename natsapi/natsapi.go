// Package natsapi registers headcount's long-running components as NATS
// micro services (github.com/nats-io/nats.go/micro), so that `nats micro ls`
// lists them, `nats micro info|stats` describes them and `nats req` calls
// their endpoints. Every component registers through Register, so names,
// version, metadata and endpoint subjects follow one contract
// (docs/protocol.md, "NATS micro services").
package natsapi

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/headcount-dev/headcount/fleet"
)

// Version is the version of the endpoints' contract, not of the binary:
// it changes when an endpoint or its answer changes incompatibly.
const Version = "1.0.0"

// Components: the last token of each micro service's name.
const (
	Member  = "member" // an agent: a follower or the leader, or the sidecar in front of one
	Router  = "router"
	Scaler  = "scaler"
	Adapter = "adapter"
	Callout = "callout"
)

// Name is component's micro service name, as `nats micro ls` lists it.
func Name(component string) string { return "headcount-" + component }

// apiKind is the subject token that sets endpoint subjects apart from the
// watched <prefix>.<service>.<kind>.<name>: an endpoint subject has five or
// six tokens after the prefix's, so watchers never receive the requests.
const apiKind = "api"

// Subject is component's endpoint of service: <prefix>.<service>.api.<component>.<endpoint>.
// Service "*" is the subscription of a component that answers for every service.
func Subject(s fleet.Subjects, service, component, endpoint string) string {
	return s.Prefix + "." + service + "." + apiKind + "." + component + "." + endpoint
}

// MemberSubject is one member's endpoint: <prefix>.<service>.api.member.<id>.<endpoint>.
func MemberSubject(s fleet.Subjects, service, id, endpoint string) string {
	return OwnSubject(s, service, Member, id, endpoint)
}

// OwnSubject is the endpoint of one replica of component, named id, whose
// answer is its own (a member's report, a router's view):
// <prefix>.<service>.api.<component>.<id>.<endpoint>.
func OwnSubject(s fleet.Subjects, service, component, id, endpoint string) string {
	return Subject(s, service, component+"."+id, endpoint)
}

// Config names one registration.
type Config struct {
	Subjects  fleet.Subjects
	Component string
	// Service is the service the component belongs to; "" for one that
	// serves every service (a scaler, an adapter, the auth callout).
	Service string
	// Role defaults to Component; a member says leader or follower.
	Role string
	// ID is the component's own name (member id, router id, process name).
	ID          string
	Description string
}

// Endpoint is one callable subject.
type Endpoint struct {
	Name    string
	Subject string
	Handler micro.HandlerFunc
}

// Register adds the micro service of cfg with endpoints on nc, a
// connection the caller owns; Stop it before closing nc.
func Register(nc *nats.Conn, cfg Config, endpoints ...Endpoint) (micro.Service, error) {
	if cfg.Component == "" || cfg.ID == "" {
		return nil, errors.New("natsapi: a registration needs a component and an id")
	}
	service, role := cfg.Service, cfg.Role
	if service == "" {
		service = "*"
	}
	if role == "" {
		role = cfg.Component
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        Name(cfg.Component),
		Version:     Version,
		Description: cfg.Description,
		Metadata:    map[string]string{"service": service, "role": role, "id": cfg.ID},
	})
	if err != nil {
		return nil, fmt.Errorf("micro service %s: %w", Name(cfg.Component), err)
	}
	for _, ep := range endpoints {
		if err := svc.AddEndpoint(ep.Name, ep.Handler, micro.WithEndpointSubject(ep.Subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("micro service %s, endpoint %s: %w", Name(cfg.Component), ep.Name, err)
		}
	}
	return svc, nil
}

// JSON answers every request with get's value, as JSON.
func JSON(get func() any) micro.HandlerFunc {
	return func(req micro.Request) { _ = req.RespondJSON(get()) }
}

// PerService is endpoint of component for every service: one subscription on
// <prefix>.*.api.<component>.<endpoint> (in the micro service's queue group,
// so one replica answers), and get is asked with the service the request's
// subject names. An error of get is answered as a 400 with its text.
func PerService(s fleet.Subjects, component, endpoint string, get func(service string) (any, error)) Endpoint {
	return Endpoint{
		Name:    endpoint,
		Subject: Subject(s, "*", component, endpoint),
		Handler: func(req micro.Request) {
			service, ok := ServiceOf(s, req.Subject())
			if !ok {
				_ = req.Error("400", "subject names no service", nil)
				return
			}
			v, err := get(service)
			if err != nil {
				_ = req.Error("400", err.Error(), nil)
				return
			}
			_ = req.RespondJSON(v)
		},
	}
}

// ServiceOf reads the service token of an endpoint subject.
func ServiceOf(s fleet.Subjects, subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".")
	if !ok {
		return "", false
	}
	service, _, _ := strings.Cut(rest, ".")
	return service, fleet.ValidName(service)
}

// HostID names a process that has no name of its own (a scaler or adapter
// replica, the auth callout): its host name, which is the pod's name in
// Kubernetes, else component.
func HostID(component string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return component
}
