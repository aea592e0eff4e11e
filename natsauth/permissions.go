// Package natsauth says who may speak on headcount's NATS subjects: the
// permission table of every role, the identities `headcount up` issues to
// its processes, and the client options every command connects with.
package natsauth

import (
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsapi"
)

// Role is what a connection may do on NATS.
type Role string

const (
	// RoleMember is a follower or the leader (or the sidecar in front of
	// one): it publishes its own report and answers its service's roll calls.
	RoleMember Role = "member"
	// RoleRouter publishes placements, its own demand and moves, and roll
	// calls, and watches its service.
	RoleRouter Role = "router"
	// RoleReader (scaler, metrics adapter, `headcount status`) watches and
	// calls the roll, nothing else.
	RoleReader Role = "reader"
	// RoleDecider (the supervisor of `headcount up`) announces its replica
	// decision for a service, and again when the roll is called.
	RoleDecider Role = "decider"
	// RoleObserver is a person's read-only identity (`headcount status`,
	// the NATS CLI): it reads every subject of its services, calls the roll
	// and the components' micro endpoints, and collects the answers in its
	// inbox; it answers nothing and registers nothing.
	RoleObserver Role = "observer"
)

// Identity is one connection's claim: its role, the service it belongs to
// ("" for a reader of every service) and its name (member or router id).
type Identity struct {
	Role    Role
	Service string
	Name    string
}

func (id Identity) String() string {
	s := string(id.Role)
	if id.Service != "" {
		s += ":" + id.Service
	}
	if id.Name != "" {
		s += "/" + id.Name
	}
	return s
}

// Validate refuses identities whose subjects would not be single tokens:
// a name with a '.' or a wildcard would widen the grant.
func (id Identity) Validate() error {
	switch id.Role {
	case RoleMember, RoleRouter:
		if !fleet.ValidName(id.Service) || !fleet.ValidName(id.Name) {
			return fmt.Errorf("%s identity needs a service and a name that are DNS-1123 labels, got %q and %q", id.Role, id.Service, id.Name)
		}
	case RoleDecider:
		if !fleet.ValidName(id.Service) {
			return fmt.Errorf("decider identity needs a service that is a DNS-1123 label, got %q", id.Service)
		}
	case RoleReader, RoleObserver:
		if id.Service != "" && !fleet.ValidName(id.Service) {
			return fmt.Errorf("reader service %q is not a DNS-1123 label", id.Service)
		}
	default:
		return fmt.Errorf("unknown role %q: want member, router, reader, observer or decider", id.Role)
	}
	return nil
}

// Permissions is the table: everything not listed is denied.
func Permissions(s fleet.Subjects, id Identity) (jwt.Permissions, error) {
	if err := id.Validate(); err != nil {
		return jwt.Permissions{}, err
	}
	var p jwt.Permissions
	svc := id.Service
	switch id.Role {
	case RoleMember:
		p.Pub.Allow.Add(s.Report(svc, id.Name))
		p.Sub.Allow.Add(s.RollCall(svc), s.RollCall(""), natsapi.MemberSubject(s, svc, id.Name, "*"))
		answers(&p, natsapi.Member)
	case RoleRouter:
		p.Pub.Allow.Add(
			s.Placed(svc, "*"),
			s.Demand(svc, id.Name),
			s.Moved(svc, id.Name),
			s.Moving(svc, id.Name),
			// Its own service's roll call only: a router has no reason
			// to make every agent of every service answer.
			s.RollCall(svc))
		// Its service's roll calls too: it answers them with its moved ids;
		// and its micro service's view endpoint.
		p.Sub.Allow.Add(s.Watch(svc), s.RollCall(svc), natsapi.OwnSubject(s, svc, natsapi.Router, id.Name, "*"))
		answers(&p, natsapi.Router)
	case RoleReader:
		rollcall := s.RollCall(svc)
		service := svc
		if svc == "" {
			// A reader of every service may also ask one service.
			p.Pub.Allow.Add(s.RollCall("*"))
			service = "*"
		}
		p.Pub.Allow.Add(rollcall)
		p.Sub.Allow.Add(s.Watch(svc), s.Decision(service),
			natsapi.Subject(s, service, natsapi.Scaler, "*"), natsapi.Subject(s, service, natsapi.Adapter, "*"))
		answers(&p, natsapi.Scaler, natsapi.Adapter)
	case RoleObserver:
		service := svc
		if svc == "" {
			p.Pub.Allow.Add(s.RollCall(""))
			service = "*"
		}
		p.Pub.Allow.Add(s.RollCall(service), natsapi.Subject(s, service, "*", "*"),
			natsapi.MemberSubject(s, service, "*", "*"), natsapi.OwnSubject(s, service, natsapi.Router, "*", "*"))
		// `nats micro ls|info|stats`: the discovery requests of every verb.
		for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
			p.Pub.Allow.Add("$SRV."+verb.String(), "$SRV."+verb.String()+".>")
		}
		// `nats sub 'P.>'` (or 'P.S.>'), and the inbox of `nats req`.
		watch := s.Prefix + ".>"
		if svc != "" {
			watch = s.Prefix + "." + svc + ".>"
		}
		p.Sub.Allow.Add(watch, nats.InboxPrefix+">")
	case RoleDecider:
		p.Pub.Allow.Add(s.Decision(svc))
		p.Sub.Allow.Add(s.RollCall(svc), s.RollCall(""))
	}
	return p, nil
}

// answers grants what the micro services of components need: their
// discovery subjects ($SRV.<verb>, $SRV.<verb>.<name>,
// $SRV.<verb>.<name>.<id>, the id being made at registration) and a
// response to each request received (roll calls included): a few, since one
// connection may carry several components that answer the same discovery
// request (up's: the leader and the scaler).
func answers(p *jwt.Permissions, components ...string) {
	p.Sub.Allow.Add("$SRV.*")
	for _, c := range components {
		p.Sub.Allow.Add("$SRV.*."+natsapi.Name(c), "$SRV.*."+natsapi.Name(c)+".*")
	}
	p.Resp = &jwt.ResponsePermission{MaxMsgs: ResponsesPerRequest, Expires: ResponseWindow}
}

// ResponseWindow is how long after a request its responses may be sent, and
// ResponsesPerRequest how many one connection may send.
const (
	ResponseWindow      = time.Minute
	ResponsesPerRequest = 8
)
