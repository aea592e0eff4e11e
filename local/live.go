package local

import (
	"fmt"
	"net/http"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/livepage"
	"github.com/headcount-dev/headcount/status"
)

// livePath is where up's control listener serves the live page (and its
// stream under livePath/events).
const livePath = "/live"

// newLivePage reads the same status as the live table, and notes the
// router's moves as the watcher hears them.
func (s *system) newLivePage() *livepage.Page {
	page := livepage.New(livepage.Config{
		Observe: func() status.Status {
			d := s.sup.Decision()
			return status.Observe(s.view, s.cfg.Service, &d)
		},
		Logger: s.cfg.Logger,
	})
	s.watcher.OnMoved(func(service string, m fleet.Moved) {
		if service == s.cfg.Service {
			page.Note("move", fmt.Sprintf("%s moved stream %s to %s", m.Router, m.From, m.To))
		}
	})
	return page
}

// withLivePage serves the page under livePath and everything else with control.
func withLivePage(page *livepage.Page, control http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(livePath, http.StripPrefix(livePath, page))
	mux.Handle(livePath+"/events", http.StripPrefix(livePath, page))
	mux.Handle("/", control)
	return mux
}
