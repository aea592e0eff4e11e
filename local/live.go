package local

import (
	"github.com/headcount-dev/headcount/livepage"
	"github.com/headcount-dev/headcount/status"
)

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
	s.watcher.OnMoved(page.NoteMoves(s.cfg.Service))
	return page
}
