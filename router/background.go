package router

import "sync"

// group runs the router's background goroutines (moves, deletions) so that
// Close can join them: once closed it starts none.
type group struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// start runs f on a goroutine of its own unless the group is closed.
func (g *group) start(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Go(f)
	return true
}

// close refuses new goroutines and waits for the running ones.
func (g *group) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// queue runs jobs in order on at most max goroutines of g: a mass drain
// deletes one old instance per stream, and that must not mean one goroutine
// per stream. Jobs still queued when g closes are dropped.
type queue struct {
	g   *group
	max int

	mu      sync.Mutex
	jobs    []func()
	running int
}

func (q *queue) add(job func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.g.isClosed() {
		return
	}
	q.jobs = append(q.jobs, job)
	if q.running < q.max && q.g.start(q.work) {
		q.running++
	}
}

func (q *queue) work() {
	for {
		q.mu.Lock()
		if len(q.jobs) == 0 || q.g.isClosed() {
			q.jobs = nil
			q.running--
			q.mu.Unlock()
			return
		}
		job := q.jobs[0]
		q.jobs[0] = nil
		q.jobs = q.jobs[1:]
		q.mu.Unlock()
		job()
	}
}

func (g *group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}
