package k8se2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/headcount-dev/headcount/internal/certtest"
	"github.com/headcount-dev/headcount/internal/freeport"
)

// cluster is a control plane without kubelets: etcd, kube-apiserver (with
// the aggregation layer) and kube-controller-manager running the deployment,
// replicaset and HPA controllers, as child processes of the test binary.
type cluster struct {
	dir        string
	host       string // the API server's address (loopback, or the netns veth's host side)
	url        string // https://host:port
	token      string // system:masters
	cfg        *rest.Config
	client     kubernetes.Interface
	kubeconfig string // admin kubeconfig, for headcount's processes

	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
	mu   *sync.Mutex
}

// output is what the process wrote so far (for failure messages).
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.log.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return s
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// start runs a child process in its own process group, logging to a buffer
// (and to dir/<name>.log for CI's artifacts).
func start(dir, name string, argv ...string) (*proc, error) {
	return startEnv(dir, name, nil, argv...)
}

// startEnv is start with env added to the test's environment.
func startEnv(dir, name string, env []string, argv ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, done: make(chan struct{}), log: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	w := io.MultiWriter(lockedWriter{p.mu, p.log}, f)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends the process group: SIGTERM, then SIGKILL after a few seconds.
func (p *proc) stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// freePort is a free port on host. etcd and the API server
// need the number on their command line; the tiny window before they bind it
// is the price (they fail loudly if someone took it).
func freePort(host string) (int, error) { return freeport.Port(host) }

// startCluster starts etcd, the API server on host and the controller
// manager; stop() ends them all.
func startCluster(bin, dir, host string) (_ *cluster, err error) {
	c := &cluster{dir: dir, host: host}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if err := c.writeCredentials(); err != nil {
		return nil, err
	}

	clientPort, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	etcd, err := start(dir, "etcd", filepath.Join(bin, "etcd"),
		"--name", "e2e", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "e2e="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, etcd)
	if err := waitHTTP(etcd, etcdURL+"/health", nil, 60*time.Second); err != nil {
		return nil, err
	}

	apiPort, err := freePort(host)
	if err != nil {
		return nil, err
	}
	c.url = fmt.Sprintf("https://%s", net.JoinHostPort(host, strconv.Itoa(apiPort)))
	p := func(name string) string { return filepath.Join(dir, name) }
	api, err := start(dir, "kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", host, "--advertise-address", host, "--secure-port", strconv.Itoa(apiPort),
		"--cert-dir", p("apiserver-certs"),
		"--endpoint-reconciler-type", "none",
		"--service-cluster-ip-range", "10.214.0.0/24",
		"--token-auth-file", p("tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", p("sa.pub"),
		"--service-account-signing-key-file", p("sa.key"),
		"--api-audiences", "https://kubernetes.default.svc",
		// The aggregation layer: the API server proxies custom.metrics.k8s.io
		// to the adapter's endpoint address (no kube-proxy here).
		"--enable-aggregator-routing=true",
		"--requestheader-client-ca-file", p("front-proxy-ca.crt"),
		"--requestheader-allowed-names", "front-proxy-client",
		"--requestheader-username-headers", "X-Remote-User",
		"--requestheader-group-headers", "X-Remote-Group",
		"--requestheader-extra-headers-prefix", "X-Remote-Extra-",
		"--proxy-client-cert-file", p("front-proxy-client.crt"),
		"--proxy-client-key-file", p("front-proxy-client.key"),
		"--v", "1")
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, api)
	c.cfg = &rest.Config{Host: c.url, BearerToken: c.token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 50, Burst: 100}
	if err := waitHTTP(api, c.url+"/readyz", c.token, 120*time.Second); err != nil {
		return nil, err
	}
	if c.client, err = kubernetes.NewForConfig(c.cfg); err != nil {
		return nil, err
	}
	if c.kubeconfig, err = c.writeKubeconfig("admin", c.token); err != nil {
		return nil, err
	}

	kcm, err := start(dir, "kube-controller-manager", filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig", c.kubeconfig,
		"--authentication-kubeconfig", c.kubeconfig, "--authorization-kubeconfig", c.kubeconfig,
		"--secure-port", "0",
		"--leader-elect=false",
		// Each controller as its own ServiceAccount, so the HPA controller
		// reads metrics with the rights RBAC gives it, as in a cluster.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file", p("sa.key"),
		"--root-ca-file", p("apiserver-certs/apiserver.crt"),
		"--controllers", "deployment-controller,replicaset-controller,horizontal-pod-autoscaler-controller,serviceaccount-controller,serviceaccount-token-controller",
		"--horizontal-pod-autoscaler-sync-period", "1s",
		"--concurrent-replicaset-syncs", "2",
		"--v", "1")
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, kcm)
	return c, nil
}

func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop()
	}
	c.procs = nil
}

// check fails if a control plane process died (its log says why).
func (c *cluster) check(t testing.TB) {
	t.Helper()
	for _, p := range c.procs {
		if p.exited() {
			t.Fatalf("%s exited: %s", p.name, p.output())
		}
	}
}

func (c *cluster) writeKubeconfig(name, token string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.url, InsecureSkipTLSVerify: true}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	cfg.CurrentContext = "e2e"
	path := filepath.Join(c.dir, name+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// writeCredentials makes what the API server needs at start: a token file
// with one admin, the service-account signing key, and the front proxy's CA
// and client certificate (the aggregation layer's identity to the adapter).
func (c *cluster) writeCredentials() error {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	c.token = hex.EncodeToString(tok)
	if err := os.WriteFile(filepath.Join(c.dir, "tokens.csv"),
		[]byte(c.token+`,e2e-admin,e2e-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	if err := certtest.WritePEM(c.dir, "sa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa)); err != nil {
		return err
	}
	if err := certtest.WritePEM(c.dir, "sa.pub", "PUBLIC KEY", pub); err != nil {
		return err
	}

	ca, err := certtest.New("front-proxy-ca")
	if err != nil {
		return err
	}
	return ca.Write(c.dir, "front-proxy-ca.crt", "front-proxy-client.crt", "front-proxy-client.key",
		&x509.Certificate{Subject: pkix.Name{CommonName: "front-proxy-client"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// waitHTTP polls url until it answers 200, or p exits, or the time is up.
func waitHTTP(p *proc, url string, token any, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: insecureTLS()}}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited: %s", p.name, p.output())
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if tok, ok := token.(string); ok {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s not ready after %s (last: %s): %s", p.name, url, timeout, last, p.output())
}

// eventually polls cond until it returns true or the deadline passes; what
// describes the state for the failure message.
func eventually(t testing.TB, timeout time.Duration, what func() string, cond func(ctx context.Context) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if cond(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not within %s: %s", timeout, what())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// insecureTLS is for the test's own probes of self-signed local servers.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
