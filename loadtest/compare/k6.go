package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
)

// k6 runs the project's k6 binary (task k6) on one script.
type k6 struct {
	bin, scripts, out string
}

// summary is k6's --summary-export: stat name → value, per metric.
type summary struct {
	Metrics map[string]map[string]any `json:"metrics"`
}

// stat is one value of the summary; NaN when absent (no samples).
func (s summary) stat(metric, name string) float64 {
	if v, ok := s.Metrics[metric][name].(float64); ok {
		return v
	}
	return math.NaN()
}

// run executes script with env and returns its summary. Failed thresholds
// (exit 99) still give a summary: the table shows the figures either way.
func (k k6) run(label, script string, env map[string]string) (summary, error) {
	export := filepath.Join(k.out, label+".json")
	logPath := filepath.Join(k.out, label+".log")
	args := []string{"run", "--quiet", "--no-color", "--no-usage-report", "--address", "",
		"--summary-export", export, "--summary-trend-stats", "avg,med,p(90),p(99),max"}
	keys := make([]string, 0, len(env))
	for key := range env {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		args = append(args, "-e", key+"="+env[key])
	}
	args = append(args, filepath.Join(k.scripts, script))
	logf, err := os.Create(logPath)
	if err != nil {
		return summary{}, err
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(k.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 99) {
		return summary{}, fmt.Errorf("k6 %s (see %s): %w", label, logPath, err)
	}
	data, err := os.ReadFile(export)
	if err != nil {
		return summary{}, fmt.Errorf("k6 %s: %w", label, err)
	}
	var s summary
	if err := json.Unmarshal(data, &s); err != nil {
		return summary{}, fmt.Errorf("k6 %s summary: %w", label, err)
	}
	return s, nil
}
