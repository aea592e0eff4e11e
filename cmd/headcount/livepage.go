package main

import (
	"context"
	"net/http"

	"github.com/headcount-dev/headcount/livepage"
	"github.com/headcount-dev/headcount/router"
	"github.com/headcount-dev/headcount/status"
)

// control is the router's control handler, with the live page at
// livepage.Path when --live-page asks. The router knows no replica
// decision (in Kubernetes the HPA makes it), so the page shows members,
// live instances and moves; its streams end when ctx does (SIGTERM), not
// holding up the graceful stop.
func (o *routerOpts) control(ctx context.Context, p *fleetProcess, rt *router.Router) http.Handler {
	if !o.livePage {
		return rt.Control()
	}
	page := livepage.New(livepage.Config{Observe: func() status.Status { return status.Observe(p.View, o.cfg.Service, nil) }})
	p.Watcher.OnMoved(page.NoteMoves(o.cfg.Service))
	go page.Run(ctx.Done())
	return livepage.Mount(page, rt.Control())
}
