package router

import (
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsapi"
)

// View is a router's view of its service, as its micro service's view
// endpoint answers it: the members it places on and routes to, their loads,
// the streams it proxies to each, and the instance ids it knows moved.
type View struct {
	Service       string       `json:"service"`
	Router        string       `json:"router"`
	fleet.Figures              // the service's totals in this router's view
	Held          int          `json:"held"`    // creations waiting here for a ready follower
	Streams       int          `json:"streams"` // streams this router proxies
	Members       []ViewMember `json:"members"`
	Moved         []MovedID    `json:"moved"`       // the soonest to expire first, at most maxViewMoved
	MovedN        int          `json:"moved_count"` // every moved id known, listed or not
}

// ViewMember is one member as the router sees it.
type ViewMember struct {
	fleet.Report
	Pending int64   `json:"pending"` // placements it has not reported yet
	Leaving int64   `json:"leaving"` // instances being moved off it
	Load    float64 `json:"load"`    // what least-loaded placement compares
	Ejected bool    `json:"ejected"` // out of placement after a refused or reset connection
	Streams int     `json:"streams"` // streams this router proxies to it
}

// MovedID is one moved instance id: GET and DELETE of From reach To.
type MovedID struct {
	From    string    `json:"from"`
	To      string    `json:"to"`
	Expires time.Time `json:"expires"`
}

// maxViewMoved bounds the moved ids one answer lists, so that it stays far
// below NATS's payload limit whatever --max-moved is.
const maxViewMoved = 1000

// ServeAPI registers the router on nc as the micro service headcount-router,
// named by its id, with the endpoint view:
// `nats req <prefix>.<service>.api.router.<id>.view ”` answers View. Stop
// the service before nc closes.
func (rt *Router) ServeAPI(nc *nats.Conn) (micro.Service, error) {
	c := rt.cfg
	return natsapi.Register(nc, natsapi.Config{
		Subjects: c.Subjects, Component: natsapi.Router, Service: c.Service, ID: c.ID,
		Description: "router: placement, owner routing and moves of one service's streams",
	}, natsapi.Endpoint{
		Name: "view", Subject: natsapi.OwnSubject(c.Subjects, c.Service, natsapi.Router, c.ID, "view"),
		Handler: natsapi.JSON(func() any { return rt.View() }),
	})
}

// View is the router's view of its service now.
func (rt *Router) View() View {
	streams := rt.moves.streams.followers()
	v := View{Service: rt.cfg.Service, Router: rt.cfg.ID, Figures: rt.view.Totals(rt.cfg.Service).Figures(),
		Held: rt.hold.len(), Streams: rt.moves.streams.len(), Members: []ViewMember{}}
	for _, m := range rt.view.Members(rt.cfg.Service) {
		v.Members = append(v.Members, ViewMember{Report: m.Report, Pending: m.Pending, Leaving: m.Leaving,
			Load: m.Load(), Ejected: m.Ejected, Streams: streams[m.Follower]})
	}
	slices.SortFunc(v.Members, func(a, b ViewMember) int { return strings.Compare(a.Follower, b.Follower) })
	v.Moved, v.MovedN = rt.moves.ids.list(maxViewMoved, time.Now())
	return v
}
