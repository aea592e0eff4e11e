package natsauth_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/operator"
	"github.com/headcount-dev/headcount/natsembed"
)

func TestClientVerifiesTheServerWithTheGivenCA(t *testing.T) {
	serverTLS, caFile := selfSigned(t)
	auth, err := operator.New(subjects)
	require.NoError(t, err)
	s, err := natsembed.Start(natsembed.Options{Auth: auth, TLS: serverTLS})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	creds, err := auth.Issue(natsauth.Identity{Role: natsauth.RoleReader})
	require.NoError(t, err)
	credsFile, err := creds.WriteFile(t.TempDir(), "reader")
	require.NoError(t, err)
	info, err := os.Stat(credsFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "credentials readable by their owner only")

	opts, err := natsauth.Client{Creds: credsFile, TLSCA: caFile}.Options()
	require.NoError(t, err)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	require.NoError(t, err)
	require.True(t, nc.TLSRequired())
	nc.Close()

	// Without the CA, or with another, the server's certificate is not trusted.
	opts, err = natsauth.Client{Creds: credsFile}.Options()
	require.NoError(t, err)
	_, err = nats.Connect(s.ClientURL(), append(opts, nats.Secure())...)
	require.ErrorContains(t, err, "certificate")
	_, otherCA := selfSigned(t)
	opts, err = natsauth.Client{Creds: credsFile, TLSCA: otherCA}.Options()
	require.NoError(t, err)
	_, err = nats.Connect(s.ClientURL(), opts...)
	require.ErrorContains(t, err, "certificate")

	// With the CA, TLS is required whatever the URL's scheme: a server
	// without it (an impostor) never sees the credentials in the clear.
	plain, err := natsembed.Start(natsembed.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { plain.Shutdown(); plain.WaitForShutdown() })
	opts, err = natsauth.Client{Creds: credsFile, TLSCA: caFile}.Options()
	require.NoError(t, err)
	_, err = nats.Connect(plain.ClientURL(), opts...)
	require.ErrorIs(t, err, nats.ErrSecureConnWanted)
}

// A TLS connection reads through its own buffer: a burst of messages of
// every size arrives whole and in order, before and after a reconnect
// (which dials again).
func TestTLSClientReadsBurstsWholeAcrossReconnects(t *testing.T) {
	serverTLS, caFile := selfSigned(t)
	s, err := natsembed.Start(natsembed.Options{TLS: serverTLS})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	opts, err := natsauth.Client{TLSCA: caFile}.Options()
	require.NoError(t, err)
	sub := natstest.Connect(t, s.ClientURL(), opts...)
	pub := natstest.Connect(t, s.ClientURL(), opts...)
	msgs, err := sub.SubscribeSync("burst")
	require.NoError(t, err)
	require.NoError(t, sub.Flush())
	body := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, i%3000) }
	burst := func() {
		const n = 5000
		for i := range n {
			require.NoError(t, pub.Publish("burst", body(i)))
		}
		require.NoError(t, pub.Flush())
		for i := range n {
			m, err := msgs.NextMsg(10 * time.Second)
			require.NoError(t, err)
			require.Equal(t, body(i), m.Data, "message %d", i)
		}
	}
	burst()
	reconnected := make(chan struct{}, 1)
	sub.SetReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} })
	require.NoError(t, sub.ForceReconnect())
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}
	require.NoError(t, sub.Flush())
	burst()
}

func TestClientOptionsRefuseBadSettingsAtStart(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	notPEM := filepath.Join(dir, "ca.txt")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	ukp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, _ := ukp.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))
	_, err = natsauth.Client{NKey: seedFile}.Options()
	require.NoError(t, err, "a valid seed file")

	for name, c := range map[string]natsauth.Client{
		"two methods":      {Creds: seedFile, NKey: seedFile},
		"missing creds":    {Creds: filepath.Join(dir, "nope")},
		"bad nkey":         {NKey: notPEM},
		"empty token":      {TokenFile: empty},
		"CA not PEM":       {TLSCA: notPEM},
		"cert without key": {TLSCert: notPEM},
	} {
		_, err := c.Options()
		require.Error(t, err, name)
	}
	require.Equal(t, []string{"HEADCOUNT_NATS_CREDS=/c", "HEADCOUNT_NATS_TLS_CA=/ca"}, natsauth.Client{Creds: "/c", TLSCA: "/ca"}.Env())
}
