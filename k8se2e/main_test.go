package k8se2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The environment: HEADCOUNT_K8S_BIN is the directory holding etcd,
// kube-apiserver and kube-controller-manager (k8se2e/run.sh sets it);
// HEADCOUNT_K8S_REQUIRE=1 turns every skip into a failure (CI).
var (
	env struct {
		cluster    *cluster
		ns         *netns // nil without root: the HPA test skips
		nsReason   string
		headcount  string // the built binary
		adapter    string // the built headcount-adapter, "" when not in this tree
		reason     string // why the cluster is not there
		kedaBin    string // KEDA's binaries (HEADCOUNT_KEDA_BIN), "" when not built
		kedaReason string
	}
)

// need skips (or, under HEADCOUNT_K8S_REQUIRE=1, fails) t when the cluster
// is missing.
func need(t *testing.T) *cluster {
	t.Helper()
	if env.cluster == nil {
		skip(t, env.reason)
	}
	env.cluster.check(t)
	return env.cluster
}

func skip(t *testing.T, reason string) {
	t.Helper()
	msg := "\n*** SKIPPED: " + reason + " ***\n*** run `task e2e:k8s` (bash k8se2e/run.sh) as root for the Kubernetes e2e tests ***"
	if os.Getenv("HEADCOUNT_K8S_REQUIRE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env.kedaBin, env.kedaReason = kedaBinDir()
	bin := os.Getenv("HEADCOUNT_K8S_BIN")
	if bin == "" {
		env.reason = "HEADCOUNT_K8S_BIN is not set (the directory of etcd, kube-apiserver, kube-controller-manager)"
		return m.Run()
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			env.reason = fmt.Sprintf("%s: %v", b, err)
			return m.Run()
		}
	}
	dir, err := os.MkdirTemp("", "headcount-k8se2e-")
	if err != nil {
		env.reason = err.Error()
		return m.Run()
	}
	defer os.RemoveAll(dir)

	if env.headcount, err = build(dir, "headcount"); err != nil {
		env.reason = err.Error()
		return m.Run()
	}
	if _, err := os.Stat(filepath.Join("..", "cmd", "headcount-adapter")); err == nil {
		if env.adapter, err = build(dir, "headcount-adapter"); err != nil {
			env.reason = err.Error()
			return m.Run()
		}
	}

	host := "127.0.0.1"
	switch ns, err := createNetns(); {
	case err != nil:
		env.nsReason = "no network namespace for the adapter (needs root and iproute2): " + err.Error()
	default:
		env.ns = ns
		defer ns.delete()
		// The API server must reach the adapter at a non-loopback endpoint,
		// and the adapter (in the namespace) must reach the API server and
		// NATS: both listen on the veth's host side, which only the
		// namespace can reach.
		host = ns.hostIP
	}

	c, err := startCluster(bin, dir, host)
	if err != nil {
		env.reason = "control plane: " + err.Error()
		return m.Run()
	}
	defer c.stop()
	env.cluster = c
	code := m.Run()
	if code != 0 {
		// Keep the control plane's logs where CI can show them.
		if out := os.Getenv("HEADCOUNT_K8S_LOGS"); out != "" {
			_ = os.MkdirAll(out, 0o755)
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				_ = os.WriteFile(filepath.Join(out, filepath.Base(l)), b, 0o644)
			}
		}
	}
	return code
}

func build(dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "github.com/headcount-dev/headcount/cmd/"+name)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v: %s", name, err, b)
	}
	return out, nil
}

// netns is a network namespace this test created, joined to the host by a
// veth pair on a /30 of 10.213.0.0/16 that nothing else uses.
type netns struct {
	name, hostIf, hostIP, nsIP string
}

const netnsPrefix = "hck8se2e-"

func createNetns() (*netns, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, err
	}
	removeStaleNetns()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(b)
	third, fourth := int(b[0]), int(b[1]&0xfc) // a /30: .x+1 host side, .x+2 namespace side
	n := &netns{
		name:   fmt.Sprintf("%s%d-%s", netnsPrefix, os.Getpid(), id),
		hostIf: "hck" + id + "h",
		hostIP: fmt.Sprintf("10.213.%d.%d", third, fourth+1),
		nsIP:   fmt.Sprintf("10.213.%d.%d", third, fourth+2),
	}
	nsIf := "hck" + id + "n"
	steps := [][]string{
		{"netns", "add", n.name},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", n.name},
		{"addr", "add", n.hostIP + "/30", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.name, "addr", "add", n.nsIP + "/30", "dev", nsIf},
		{"-n", n.name, "link", "set", nsIf, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			n.delete()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return n, nil
}

// delete removes the namespace and the veth pair (deleting one end removes
// both).
func (n *netns) delete() {
	_ = exec.Command("ip", "link", "del", n.hostIf).Run()
	_ = exec.Command("ip", "netns", "del", n.name).Run()
	_ = os.RemoveAll(n.etc())
}

// etc is the directory whose files `ip netns exec` mounts over /etc's.
func (n *netns) etc() string { return filepath.Join("/etc/netns", n.name) }

// setHosts gives the processes run in the namespace an /etc/hosts naming
// these addresses (the cluster DNS they would have in a pod).
func (n *netns) setHosts(names map[string][]string) error {
	if err := os.MkdirAll(n.etc(), 0o755); err != nil {
		return err
	}
	hosts := "127.0.0.1 localhost\n"
	for ip, ns := range names {
		hosts += ip + " " + strings.Join(ns, " ") + "\n"
	}
	return os.WriteFile(filepath.Join(n.etc(), "hosts"), []byte(hosts), 0o644)
}

// exec is argv run inside the namespace.
func (n *netns) exec(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.name}, argv...)
}

// removeStaleNetns deletes namespaces a crashed earlier run of this test
// left behind (its pid is in the name and no longer alive).
func removeStaleNetns() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
		_ = os.RemoveAll(filepath.Join("/etc/netns", name))
	}
}
