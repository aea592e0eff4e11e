package natsauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/benchtest"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/operator"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/router"
	"github.com/headcount-dev/headcount/scaler"
)

// The cost of authorization and TLS on NATS for the two hot paths that
// touch it: creations through the router (each publishes `placed`, and the
// follower's agent reports the new count) and the scaler's report intake.
// Three identical stacks run side by side in one process, one on an open
// NATS, one with per-process JWT identities, one with identities and TLS;
// every iteration measures all, in rotating order, and the medians of the
// per-iteration ratios (to the open stack's throughput) are reported. This
// charges the whole machine (publisher, server and consumer share its
// cores); BenchmarkScalerProcess and BenchmarkRouterProcess charge only the
// process that does the work.
//
//	go test -run '^$' -bench AuthTLS -benchtime 60x -count 3 ./natsauth/
func BenchmarkAuthTLS(b *testing.B) {
	modes := []struct {
		name      string
		auth, tls bool
	}{{"open", false, false}, {"auth", true, false}, {"auth+tls", true, true}}
	stacks := make([]*benchStack, len(modes))
	for i, m := range modes {
		stacks[i] = startStack(b, m.auth, m.tls)
	}
	const creations, reports = 400, 4000
	createRates, intakeRates := make([][]float64, len(modes)), make([][]float64, len(modes))
	b.ResetTimer()
	for i := range b.N {
		for k := range stacks {
			j := (i + k) % len(stacks) // rotate which stack goes first
			createRates[j] = append(createRates[j], stacks[j].createRate(b, creations))
			intakeRates[j] = append(intakeRates[j], stacks[j].intakeRate(b, reports))
		}
	}
	b.StopTimer()
	ratio := func(rates [][]float64, j int) float64 {
		var rs []float64
		for i := range rates[0] {
			rs = append(rs, rates[j][i]/rates[0][i])
		}
		return benchtest.Median(rs)
	}
	b.ReportMetric(benchtest.Median(createRates[0]), "open-creations/s")
	b.ReportMetric(benchtest.Median(intakeRates[0]), "open-reports/s")
	for j := 1; j < len(modes); j++ {
		b.ReportMetric(ratio(createRates, j), modes[j].name+"-creations-ratio")
		b.ReportMetric(ratio(intakeRates, j), modes[j].name+"-reports-ratio")
	}
}

var quiet = slog.New(slog.DiscardHandler)

type benchStack struct {
	control  string // router's control URL
	client   *http.Client
	reporter *nats.Conn  // a member's connection, publishing its own reports
	view     *fleet.View // the scaler's
	seq      uint64
}

const (
	benchService  = "bench"
	intakeService = "intake" // the reporter's own: the router must not place on it
)

// benchNATS is an embedded NATS of one benchmark mode: open, with
// per-process identities (auth) and with TLS.
type benchNATS struct {
	url    string
	auth   *operator.Authority // nil: anonymous clients
	tls    []nats.Option       // the clients' TLS options, as a command makes them
	caFile string
}

func startBenchNATS(b *testing.B, withAuth, withTLS bool) *benchNATS {
	b.Helper()
	var opts natsembed.Options
	n := &benchNATS{}
	if withTLS {
		opts.TLS, n.caFile = selfSigned(b)
		var err error
		n.tls, err = natsauth.Client{TLSCA: n.caFile}.Options()
		require.NoError(b, err)
	}
	if withAuth {
		var err error
		n.auth, err = operator.New(subjects)
		require.NoError(b, err)
		opts.Auth = n.auth
	}
	s, err := natsembed.Start(opts)
	require.NoError(b, err)
	b.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	n.url = s.ClientURL()
	return n
}

// connect is a connection speaking as ids (one user may hold several).
func (n *benchNATS) connect(b *testing.B, ids ...natsauth.Identity) *nats.Conn {
	b.Helper()
	opts := slices.Clone(n.tls)
	if n.auth != nil {
		creds, err := n.auth.Issue(ids...)
		require.NoError(b, err)
		opts = append(opts, creds.Option())
	}
	return natstest.Connect(b, n.url, opts...)
}

// env is what a child headcount process connects with as id: the URL, its
// credentials file and the CA, as HEADCOUNT_NATS_* variables.
func (n *benchNATS) env(b *testing.B, id natsauth.Identity) []string {
	b.Helper()
	c := natsauth.Client{TLSCA: n.caFile}
	if n.auth != nil {
		creds, err := n.auth.Issue(id)
		require.NoError(b, err)
		c.Creds, err = creds.WriteFile(b.TempDir(), string(id.Role))
		require.NoError(b, err)
	}
	return append(c.Env(), "HEADCOUNT_NATS_URL="+n.url)
}

func member(service, name string) natsauth.Identity {
	return natsauth.Identity{Role: natsauth.RoleMember, Service: service, Name: name}
}

// startFollower runs follower-1 of benchService: an HTTP stub that answers
// every creation 201 with a prefixed id, counted by its agent, which also
// answers the routers' identity probes.
func startFollower(b *testing.B, n *benchNATS) {
	b.Helper()
	var ag *agent.Agent
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		ag.Add(1)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "follower-1/"+uuid.NewString())
	})
	follower := httptest.NewServer(mux)
	b.Cleanup(follower.Close)
	addr := follower.Listener.Addr().String()
	var err error
	ag, err = agent.New(n.connect(b, member(benchService, "follower-1")), agent.Config{Service: benchService, Follower: "follower-1", Control: addr, Streaming: addr, Logger: quiet})
	require.NoError(b, err)
	mux.Handle(fleet.IdentityPath, ag.IdentityHandler())
	b.Cleanup(func() { _ = ag.Close() })
	ag.Ready()
}

// startStack runs NATS, a follower, a router and a scaler, with
// per-process identities (withAuth) and TLS.
func startStack(b *testing.B, withAuth, withTLS bool) *benchStack {
	b.Helper()
	n := startBenchNATS(b, withAuth, withTLS)
	startFollower(b, n)

	// The router's process: its connection and its one watcher.
	rnc := n.connect(b, natsauth.Identity{Role: natsauth.RoleRouter, Service: benchService, Name: "r-1"})
	rview, rw := natstest.Watch(b, rnc, fleet.WatchConfig{Services: []string{benchService}, Self: "r-1", Logger: quiet})
	rc := router.DefaultConfig()
	rc.Service, rc.ID, rc.Logger = benchService, "r-1", quiet
	rt, err := router.New(rnc, rview, rc)
	require.NoError(b, err)
	rw.OnChange(rt.Changed)
	control := httptest.NewServer(rt.Control())
	b.Cleanup(func() { control.Close(); rt.Close() })

	// The scaler's process: a reader of every service.
	sview, sw := natstest.Watch(b, n.connect(b, natsauth.Identity{Role: natsauth.RoleReader}), fleet.WatchConfig{Logger: quiet})
	sc := scaler.DefaultConfig()
	sc.Logger = quiet
	scl := scaler.New(sview, sc)
	sw.OnChange(scl.Changed)
	b.Cleanup(scl.Close)
	require.Eventually(b, func() bool { return rview.Totals(benchService).Ready == 1 }, 10*time.Second, 5*time.Millisecond)
	return &benchStack{
		control:  control.URL,
		client:   benchClient(),
		reporter: n.connect(b, member(intakeService, "reporter")),
		view:     sview,
	}
}

// createRate posts n creations through the router from 8 clients at once.
func (s *benchStack) createRate(b *testing.B, n int) float64 {
	const workers = 8
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range n / workers {
				if err := create(s.client, s.control); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n/workers*workers) / time.Since(start).Seconds()
}

// benchClient keeps a connection per concurrent client.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
}

// create posts one creation to the router's control URL and expects 201.
func create(c *http.Client, control string) error {
	resp, err := c.Post(control+"/v1/streams/collection", "application/json", strings.NewReader(`{}`))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("creation: status %d", resp.StatusCode)
	}
	return nil
}

// intakeRate publishes n reports of one member and waits until the scaler's
// view holds the last.
func (s *benchStack) intakeRate(b *testing.B, n int) float64 {
	start := time.Now()
	for range n {
		s.seq++
		data, err := json.Marshal(fleet.Report{
			V: fleet.Version, Service: intakeService, Follower: "reporter", Incarnation: "bench",
			Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:1",
			Instances: int64(s.seq % 1000), Created: int64(s.seq), Seq: s.seq, TTLMillis: 600_000,
		})
		require.NoError(b, err)
		require.NoError(b, s.reporter.Publish(subjects.Report(intakeService, "reporter"), data))
	}
	require.NoError(b, s.reporter.Flush())
	want := s.seq
	require.Eventually(b, func() bool {
		m, ok := s.view.Member(intakeService, "reporter")
		return ok && m.Seq == want
	}, 30*time.Second, 100*time.Microsecond)
	return float64(n) / time.Since(start).Seconds()
}

// selfSigned makes a certificate for 127.0.0.1 and writes it as the CA
// bundle the clients verify the server with.
func selfSigned(b testing.TB) (*tls.Config, string) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(b, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(b, err)
	ca := filepath.Join(b.TempDir(), "ca.pem")
	require.NoError(b, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, ca
}
