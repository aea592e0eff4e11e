// Package keep keeps one group of processes running: it starts them in
// order, and when one exits on its own it kills the others and starts them
// all again, at once when what they need (their Gate: a Skip follower's
// leader) went away and came back since they started, else after a crash
// backoff. `up` keeps each follower and its leader with it; `headcount
// supervise` keeps a Skip follower inside its Kubernetes container, so that
// a leader restart never shows the kubelet an exit (no CrashLoopBackOff).
package keep

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"syscall"
	"time"
)

// Gate holds (re)starts until what the processes need is up.
type Gate interface {
	// State is the number of times the gate has closed so far, whether it is
	// open now, and a channel closed at its next change.
	State() (closings uint64, open bool, changed <-chan struct{})
}

// Config says what to keep running and how.
type Config struct {
	Name string // in logs
	// Spawn returns the processes of one run, not started yet: they start
	// in order and stop in reverse order (a sidecar listed after its
	// follower drains before the follower stops).
	Spawn func() ([]*exec.Cmd, error)
	// Gate, if set, holds every start until it is open; processes that exit
	// after the gate closed (their leader went away) start again as soon as
	// it opens, without a crash backoff.
	Gate Gate
	// RestartAtOnce restarts processes that ran for AtOnceAfter or more at
	// once (the leader: everything waits for it); a crash loop still backs off.
	RestartAtOnce bool
	// MaxCrashes, if positive, makes Run return after that many crashes in
	// a row (exits with the gate open all along, each after less than
	// AtOnceAfter): a crash loop of the process's own is left to whoever
	// runs Run (the kubelet's CrashLoopBackOff, which an operator sees).
	MaxCrashes int
	// StopTimeout bounds a stop: a process still running this long after
	// SIGTERM is killed (default 60 s).
	StopTimeout time.Duration
	// Started hears the process ids of each run; Exited is called each time
	// the processes of a run are all gone (stopped, crashed and killed
	// before a restart, or failed to start), before any restart; Restarting
	// before each restart.
	Started    func(pids []int)
	Exited     func()
	Restarting func()
	Logger     *slog.Logger
}

// AtOnceAfter is how long processes must have run for their exit to count
// as a fault rather than a crash loop.
const AtOnceAfter = 10 * time.Second

// Crash backoff: doubled from the first to the last after each crash,
// reset after a minute of running or a restart the gate caused.
const (
	firstBackoff = time.Second
	maxBackoff   = 30 * time.Second
)

// ErrCrashLoop is what Run returns after MaxCrashes crashes in a row.
var ErrCrashLoop = errors.New("crash loop")

// Run keeps the processes running until stop is closed, then stops them
// (SIGTERM in reverse order, SIGKILL after StopTimeout) and returns nil;
// or returns ErrCrashLoop after MaxCrashes crashes in a row.
func Run(cfg Config, stop <-chan struct{}) error {
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := &keeper{cfg: cfg, stop: stop}
	return k.run()
}

type keeper struct {
	cfg  Config
	stop <-chan struct{}
}

func (k *keeper) run() error {
	backoff := firstBackoff
	crashes := 0
	for {
		closings, ok := k.awaitGate()
		if !ok {
			return nil
		}
		started := time.Now()
		stopped, err := k.runOnce()
		if k.cfg.Exited != nil {
			k.cfg.Exited()
		}
		if stopped {
			return nil
		}
		ran := time.Since(started)
		if ran > time.Minute {
			backoff = firstBackoff
		}
		delay := backoff
		if k.cfg.RestartAtOnce && ran >= AtOnceAfter {
			delay = 0
		}
		switch k.pause(delay, closings) {
		case pauseStopped:
			return nil
		case pauseGateClosed:
			// The absence of what it needs made it exit: not a crash of its own.
			k.cfg.Logger.Info("restart waits for the gate", "member", k.cfg.Name)
			backoff, crashes = firstBackoff, 0
		case pauseElapsed:
			backoff = min(2*backoff, maxBackoff)
			if ran < AtOnceAfter {
				crashes++
			} else {
				crashes = 0
			}
			if k.cfg.MaxCrashes > 0 && crashes >= k.cfg.MaxCrashes {
				return fmt.Errorf("%s: %w: %d exits in a row with the gate open: %w", k.cfg.Name, ErrCrashLoop, crashes, err)
			}
		}
		if k.cfg.Restarting != nil {
			k.cfg.Restarting()
		}
	}
}

// gateState is the gate's state, an always open one without a Gate.
func (k *keeper) gateState() (uint64, bool, <-chan struct{}) {
	if k.cfg.Gate == nil {
		return 0, true, nil
	}
	return k.cfg.Gate.State()
}

// awaitGate waits until the gate is open (the closings so far) or stop
// (false).
func (k *keeper) awaitGate() (uint64, bool) {
	for {
		closings, open, changed := k.gateState()
		if open {
			return closings, true
		}
		select {
		case <-k.stop:
			return 0, false
		case <-changed:
		}
	}
}

type pauseEnd int

const (
	pauseElapsed    pauseEnd = iota
	pauseStopped             // told to stop
	pauseGateClosed          // the gate has closed since closings
)

// pause waits d before a restart, cut short when the gate has closed since
// it counted closings.
func (k *keeper) pause(d time.Duration, closings uint64) pauseEnd {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		now, _, changed := k.gateState()
		if now != closings {
			return pauseGateClosed
		}
		select {
		case <-k.stop:
			return pauseStopped
		case <-timer.C:
			return pauseElapsed
		case <-changed:
		}
	}
}

// runOnce launches the processes and waits until they are gone: stopped
// for good (true), or one exited on its own (its error) and the others
// were killed.
func (k *keeper) runOnce() (stopped bool, err error) {
	procs, err := k.launch()
	if err != nil {
		k.cfg.Logger.Error("member did not start", "member", k.cfg.Name, "err", err)
		return false, err
	}
	select {
	case <-k.stop:
		k.terminate(procs)
		k.cfg.Logger.Info("member stopped", "member", k.cfg.Name)
		return true, nil
	case p := <-exitOfAny(procs):
		k.cfg.Logger.Warn("member process exited; restarting", "member", k.cfg.Name, "cmd", p.cmd.Path, "err", p.err)
		kill(procs)
		return false, fmt.Errorf("%s: %w", p.cmd.Path, p.err)
	}
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (k *keeper) launch() ([]*process, error) {
	cmds, err := k.cfg.Spawn()
	if err != nil {
		return nil, err
	}
	var procs []*process
	var pids []int
	for _, c := range cmds {
		// Own process group: SIGTERM reaches a shell's children too; and die
		// with the keeper rather than linger.
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			kill(procs)
			return nil, fmt.Errorf("%s: %w", c.Path, err)
		}
		p := &process{cmd: c, done: make(chan struct{})}
		go func() { p.err = c.Wait(); close(p.done) }()
		procs = append(procs, p)
		pids = append(pids, c.Process.Pid)
	}
	if k.cfg.Started != nil {
		k.cfg.Started(pids)
	}
	return procs, nil
}

func exitOfAny(procs []*process) <-chan *process {
	out := make(chan *process, len(procs))
	for _, p := range procs {
		go func() { <-p.done; out <- p }()
	}
	return out
}

// terminate stops procs in reverse order: SIGTERM, then SIGKILL after StopTimeout.
func (k *keeper) terminate(procs []*process) {
	for _, p := range slices.Backward(procs) {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(k.cfg.StopTimeout):
			k.cfg.Logger.Warn("process did not stop in time; killing it", "member", k.cfg.Name, "pid", p.cmd.Process.Pid)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

func kill(procs []*process) {
	for _, p := range procs {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}
