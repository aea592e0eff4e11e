package e2e

import (
	"testing"

	"golang.org/x/sys/unix"
)

// CPUSeconds is the CPU time of process pid so far, every thread's, living
// or exited, to the nanosecond: the kernel's per-process scheduler clock
// (clock_getcpuclockid(3)), where /proc/<pid>/stat counts 10 ms ticks, a
// step of 2 % on half a second of a child's CPU.
func CPUSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) from the kernel's
	// posix-timers.h.
	const cpuclockSched = 2
	var ts unix.Timespec
	if err := unix.ClockGettime(int32(^pid<<3|cpuclockSched), &ts); err != nil {
		t.Fatalf("process %d's CPU clock: %v", pid, err)
	}
	return float64(ts.Nano()) / 1e9
}
