package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// CPUSeconds is the user+system CPU time of process pid so far, from
// /proc/<pid>/stat (Linux; USER_HZ = 100, so 10 ms steps).
func CPUSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which ends with the last ')'.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	var ticks float64
	for _, f := range fields[11:13] { // utime, stime
		n, err := strconv.ParseFloat(f, 64)
		if err != nil {
			t.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return ticks / 100
}
