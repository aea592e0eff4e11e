package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NATSCLIVersion is the NATS CLI the tests drive, as a user would install it.
const NATSCLIVersion = "v0.5.1"

// NATSCLI returns the path of the NATS CLI, built once from the Go module
// proxy into <repo>/.cache/bin (go install …/natscli/nats@NATSCLIVersion) and
// reused while its version matches. Where it cannot be built the test is
// skipped, loudly, except in CI as root (CI=true), where that fails it.
func NATSCLI(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join(moduleRoot(t), ".cache", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "nats")
	if out, err := exec.Command(bin, "--version").Output(); err == nil && strings.TrimSpace(string(out)) == NATSCLIVersion {
		return bin
	}
	cmd := exec.Command("go", "install", "github.com/nats-io/natscli/nats@"+NATSCLIVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := "SKIPPED: cannot build the NATS CLI " + NATSCLIVersion + " (go install github.com/nats-io/natscli/nats@" + NATSCLIVersion + "): " + err.Error() + "\n" + string(out)
		if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// moduleRoot is the directory of go.mod above the test's package.
func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
