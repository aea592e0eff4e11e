package natsauth

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"
)

// Client is how a command authenticates to NATS and verifies it: the
// --nats-* flags. At most one of Creds, NKey and TokenFile.
type Client struct {
	Creds     string // .creds file: user JWT and seed
	NKey      string // file holding an nkey seed (SU...)
	TokenFile string // file holding a token, re-read on every (re)connect: a projected ServiceAccount token
	TLSCA     string // PEM CA bundle to verify the server with
	TLSCert   string // PEM client certificate, for servers that verify clients
	TLSKey    string // key of TLSCert
}

// AddFlags registers c's flags (--nats-creds, --nats-nkey, --nats-token-file,
// --nats-tls-ca, --nats-tls-cert, --nats-tls-key) on fs: one definition for
// every binary that connects to NATS.
func (c *Client) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Creds, "nats-creds", "", "NATS credentials file (user JWT and nkey seed)")
	fs.StringVar(&c.NKey, "nats-nkey", "", "file holding the NATS nkey seed to authenticate with")
	fs.StringVar(&c.TokenFile, "nats-token-file", "", "file holding the NATS token, re-read at every connect (a projected ServiceAccount token for the auth callout)")
	fs.StringVar(&c.TLSCA, "nats-tls-ca", "", "PEM CA bundle that signed the NATS server's certificate (TLS when set)")
	fs.StringVar(&c.TLSCert, "nats-tls-cert", "", "PEM client certificate for NATS (mutual TLS)")
	fs.StringVar(&c.TLSKey, "nats-tls-key", "", "PEM key of --nats-tls-cert")
}

// Options turns c into connection options; it reads the files now so that a
// bad one is an error at start rather than a reconnect loop.
func (c Client) Options() ([]nats.Option, error) {
	var opts []nats.Option
	set := 0
	for _, f := range []string{c.Creds, c.NKey, c.TokenFile} {
		if f != "" {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("--nats-creds, --nats-nkey and --nats-token-file exclude one another")
	}
	switch {
	case c.Creds != "":
		if _, err := os.Stat(c.Creds); err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		opt, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, opt)
	case c.TokenFile != "":
		if _, err := readToken(c.TokenFile); err != nil {
			return nil, fmt.Errorf("--nats-token-file: %w", err)
		}
		// Kubelet rotates projected tokens in place: read the file each time.
		opts = append(opts, nats.TokenHandler(func() string {
			t, _ := readToken(c.TokenFile)
			return t
		}))
	}
	if c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" {
		cfg, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(cfg), nats.SetCustomDialer(&bufferedDialer{Dialer: net.Dialer{Timeout: nats.DefaultTimeout}}))
	}
	return opts, nil
}

// bufferedDialer dials connections whose reads go through a 32 KiB buffer,
// for TLS: crypto/tls reads a record or two at a time from its connection,
// and nats-server writes a record for each of its small output buffers
// (about 512 bytes, a message or two), so a subscriber would make a read
// syscall every few messages where a plain connection makes one per 32 KiB.
// It dials as nats.go's own dialer would by default (2 s timeout); nats.go
// still makes the TLS handshake and verifies the server above it.
type bufferedDialer struct{ net.Dialer }

func (d *bufferedDialer) Dial(network, address string) (net.Conn, error) {
	conn, err := d.Dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, 32<<10)}, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c Client) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("--nats-tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--nats-tls-ca %s: no PEM certificate", c.TLSCA)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-tls-cert/--nats-tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Env passes c to a child headcount process through its HEADCOUNT_NATS_*
// variables: paths only, never secrets on a command line.
func (c Client) Env() []string {
	var env []string
	for _, kv := range [][2]string{
		{"CREDS", c.Creds}, {"NKEY", c.NKey}, {"TOKEN_FILE", c.TokenFile},
		{"TLS_CA", c.TLSCA}, {"TLS_CERT", c.TLSCert}, {"TLS_KEY", c.TLSKey},
	} {
		if kv[1] != "" {
			env = append(env, "HEADCOUNT_NATS_"+kv[0]+"="+kv[1])
		}
	}
	return env
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return t, nil
}

// SeedKey reads an nkey seed file (for the auth callout's issuer key).
func SeedKey(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return nkeys.ParseDecoratedNKey(b)
}
