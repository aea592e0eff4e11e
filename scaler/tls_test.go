package scaler

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headcount-dev/headcount/internal/natstest"
)

// pki is a throwaway CA with a server and a client certificate, written to a
// temp dir (never committed).
type pki struct {
	dir                       string
	caPool                    *x509.CertPool
	client                    tls.Certificate
	serverCert, serverKey, ca string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "headcount test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	p := &pki{dir: dir, caPool: x509.NewCertPool()}
	p.caPool.AddCert(caCert)
	p.ca = write(t, dir, "ca.crt", "CERTIFICATE", caDER)

	issue := func(name string, serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		return der, key
	}
	der, key := issue("headcount-scaler", 2, x509.ExtKeyUsageServerAuth)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	p.serverCert = write(t, dir, "tls.crt", "CERTIFICATE", der)
	p.serverKey = write(t, dir, "tls.key", "EC PRIVATE KEY", keyDER)

	der, key = issue("keda-operator", 3, x509.ExtKeyUsageClientAuth)
	p.client = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return p
}

func write(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

func (p *pki) creds(withClientCert bool) grpc.DialOption {
	cfg := &tls.Config{RootCAs: p.caPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if withClientCert {
		cfg.Certificates = []tls.Certificate{p.client}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	url := natstest.Server(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	call := func(addr string, opt grpc.DialOption) error {
		c, _ := dial(t, addr, opt)
		_, err := c.GetMetricSpec(ctx, ref("hackernews"))
		return err
	}

	t.Run("server TLS", func(t *testing.T) {
		cfg, err := TLSConfig(p.serverCert, p.serverKey, "")
		require.NoError(t, err)
		_, addr, _ := serve(t, url, ServerConfig{TLS: cfg})
		assert.NoError(t, call(addr, p.creds(false)))
		assert.Error(t, call(addr, grpc.WithTransportCredentials(insecure.NewCredentials())), "plaintext is refused")
	})
	t.Run("mTLS", func(t *testing.T) {
		cfg, err := TLSConfig(p.serverCert, p.serverKey, p.ca)
		require.NoError(t, err)
		_, addr, _ := serve(t, url, ServerConfig{TLS: cfg})
		assert.NoError(t, call(addr, p.creds(true)), "KEDA with tlsClientCert/tlsClientKey")
		assert.Error(t, call(addr, p.creds(false)), "a client without a certificate is refused")
	})
	t.Run("bad files", func(t *testing.T) {
		_, err := TLSConfig(p.serverCert, "", "")
		assert.Error(t, err)
		_, err = TLSConfig(p.serverCert, filepath.Join(p.dir, "missing.key"), "")
		assert.Error(t, err)
		_, err = TLSConfig(p.serverCert, p.serverKey, p.serverKey)
		assert.ErrorContains(t, err, "no PEM certificate")
	})
}

func TestTLSReloadsRotatedCertificate(t *testing.T) {
	p := newPKI(t)
	cfg, err := TLSConfig(p.serverCert, p.serverKey, "")
	require.NoError(t, err)
	first, err := cfg.GetCertificate(nil)
	require.NoError(t, err)

	rotated := newPKI(t)
	for src, dst := range map[string]string{rotated.serverCert: p.serverCert, rotated.serverKey: p.serverKey} {
		data, err := os.ReadFile(src)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(dst, data, 0o600))
		later := time.Now().Add(time.Minute) // file systems with coarse mtimes
		require.NoError(t, os.Chtimes(dst, later, later))
	}
	second, err := cfg.GetCertificate(nil)
	require.NoError(t, err)
	assert.NotEqual(t, first.Certificate[0], second.Certificate[0])

	require.NoError(t, os.Remove(p.serverKey))
	kept, err := cfg.GetCertificate(nil)
	require.NoError(t, err, "mid-rotation, the last good pair is kept")
	assert.Equal(t, second.Certificate[0], kept.Certificate[0])
}
