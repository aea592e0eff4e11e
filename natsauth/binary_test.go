package natsauth_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/operator"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/status"
)

// The built binary's components, each a process with its own credentials
// file (HEADCOUNT_NATS_CREDS) over TLS (HEADCOUNT_NATS_TLS_CA), against a
// NATS that trusts only those identities: the permission table is enough
// for each to do its whole job, and none of them hits a violation.
func TestEveryComponentWorksWithItsOwnCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := e2e.Binary(t)
	serverTLS, caFile := selfSigned(t)
	auth, err := operator.New(subjects)
	require.NoError(t, err)
	s, err := natsembed.Start(natsembed.Options{Auth: auth, TLS: serverTLS})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	dir := t.TempDir()
	env := func(id natsauth.Identity, name string) []string {
		creds, err := auth.Issue(id)
		require.NoError(t, err)
		file, err := creds.WriteFile(dir, name)
		require.NoError(t, err)
		return append(os.Environ(), "HEADCOUNT_NATS_URL="+s.ClientURL(), "HEADCOUNT_NATS_CREDS="+file, "HEADCOUNT_NATS_TLS_CA="+caFile)
	}
	var logs logBuffer
	run := func(id natsauth.Identity, args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env(id, args[0])
		cmd.Stdout, cmd.Stderr = &logs, &logs
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	member := func(name string) natsauth.Identity {
		return natsauth.Identity{Role: natsauth.RoleMember, Service: "demo", Name: name}
	}

	lc, ls := loopback(t), loopback(t)
	run(member("leader"), "leader", "--control-addr", lc, "--streaming-addr", ls)
	run(member("follower-1"), "follower", "--id", "follower-1", "--leader-control", lc, "--leader-streaming", ls,
		"--control-addr", loopback(t), "--streaming-addr", loopback(t))
	rs, rc := loopback(t), loopback(t)
	run(natsauth.Identity{Role: natsauth.RoleRouter, Service: "demo", Name: "r-1"}, "router", "--service", "demo", "--id", "r-1",
		"--streaming-addr", rs, "--control-addr", rc)
	scalerHTTP := loopback(t)
	run(natsauth.Identity{Role: natsauth.RoleReader}, "scaler", "--grpc-addr", loopback(t), "--http-addr", scalerHTTP)

	// The router places through its view once it sees a ready follower.
	require.Eventually(t, func() bool {
		return strings.Contains(get("http://"+rc+"/metrics"), `headcount_followers{service="demo",state="ready"} 1`)
	},
		30*time.Second, 50*time.Millisecond, "the router sees the follower ready")
	code, id := e2e.Do(t, http.MethodPost, rc+"/v1/streams/collection", `{"name":"posts"}`)
	require.Equal(t, http.StatusCreated, code, id)
	require.True(t, strings.HasPrefix(id, "follower-1/"), id)
	stream, code := e2e.Subscribe(t, rs, id)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "init", stream.Next(t).Kind)

	// The scaler and `status` read the same fleet with a reader's identity.
	require.Eventually(t, func() bool {
		return strings.Contains(get("http://"+scalerHTTP+"/metrics"), `headcount_scaler_live_instances{service="demo"} 1`)
	}, 10*time.Second, 50*time.Millisecond, "the scaler counts the live instance")
	statusCmd := exec.Command(bin, "status", "--service", "demo", "--json")
	statusCmd.Env = env(natsauth.Identity{Role: natsauth.RoleReader}, "status")
	out, err := statusCmd.Output()
	require.NoError(t, err)
	var st status.Status
	require.NoError(t, json.Unmarshal(out, &st))
	require.Equal(t, int64(1), st.Live)
	require.Len(t, st.Members, 2, "leader and follower")

	stream.Close()
	require.NotContains(t, logs.String(), "Permissions Violation", "every component stays within its grant")
	require.NotContains(t, logs.String(), "Authorization Violation")
}

// get is the body at url, "" when it does not answer.
func get(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// loopback is a free 127.0.0.1 address for a child to bind.
func loopback(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// logBuffer collects the children's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// `up --nats-url` on a NATS that up does not own: up and its children all
// authenticate with the --nats-* flags given to up (a credentials file and
// the CA, passed to the children as HEADCOUNT_NATS_* paths), over TLS.
func TestUpOnAnExternalNATSWithCredentialsAndTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	serverTLS, caFile := selfSigned(t)
	auth, err := operator.New(subjects)
	require.NoError(t, err)
	s, err := natsembed.Start(natsembed.Options{Auth: auth, TLS: serverTLS})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	member := func(name string) natsauth.Identity {
		return natsauth.Identity{Role: natsauth.RoleMember, Service: "demo", Name: name}
	}
	creds, err := auth.Issue(natsauth.Identity{Role: natsauth.RoleRouter, Service: "demo", Name: "router-1"},
		natsauth.Identity{Role: natsauth.RoleReader}, natsauth.Identity{Role: natsauth.RoleDecider, Service: "demo"},
		member("leader-1"), member("follower-1")) // up names its demo leader leader-1 (its own process, restarted in place)
	require.NoError(t, err)
	file, err := creds.WriteFile(t.TempDir(), "up")
	require.NoError(t, err)

	up := e2e.StartUp(t, e2e.Binary(t), "--nats-url", s.ClientURL(), "--nats-creds", file, "--nats-tls-ca", caFile,
		"--min", "1", "--max", "1", "--drain-timeout", "5s")
	require.Empty(t, up.Creds, "up issues nothing on a NATS it does not own")
	var code int
	var id string
	require.Eventually(t, func() bool {
		code, id = e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/collection", `{"name":"posts"}`)
		return code == http.StatusCreated
	}, 30*time.Second, 100*time.Millisecond, "a creation placed on the follower, a child of up registered with up's credentials")
	require.True(t, strings.HasPrefix(id, "follower-1/"), id)
	up.Stop(t, 30*time.Second)
	require.NotContains(t, up.Logs(), "Permissions Violation")
}
