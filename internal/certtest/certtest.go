// Package certtest makes certificate authorities and certificates for the
// tests' own servers and clients. Only tests import it.
package certtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// CA signs certificates valid for a day.
type CA struct {
	Cert *x509.Certificate
	Key  *rsa.PrivateKey
	DER  []byte
	next int64 // the last serial number issued
}

// New makes a self-signed CA named cn.
func New(cn string) (*CA, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, DER: der, next: 1}, nil
}

// Issue signs tmpl (its subject, names and extended usages; the rest is set
// here) for a new key.
func (ca *CA) Issue(tmpl *x509.Certificate) (der []byte, key *rsa.PrivateKey, err error) {
	if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, nil, err
	}
	ca.next++
	tmpl.SerialNumber = big.NewInt(ca.next)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	return der, key, err
}

// Write issues tmpl and writes the CA's certificate, the new certificate
// and its key into dir as PEM files caName, certName and keyName (a TLS
// Secret's are ca.crt, tls.crt and tls.key).
func (ca *CA) Write(dir, caName, certName, keyName string, tmpl *x509.Certificate) error {
	der, key, err := ca.Issue(tmpl)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{
		{caName, "CERTIFICATE", ca.DER},
		{certName, "CERTIFICATE", der},
		{keyName, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)},
	} {
		if err := WritePEM(dir, f.name, f.typ, f.der); err != nil {
			return err
		}
	}
	return nil
}

// WritePEM writes der as a PEM block of type typ to dir/name, readable by
// its owner only.
func WritePEM(dir, name, typ string, der []byte) error {
	return os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// Described is the certificate a cert-manager Certificate describes: its
// commonName, dnsNames and usages ("server auth", "client auth"); tests issue
// it where no cert-manager runs.
func Described(commonName string, dnsNames, usages []string) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: commonName}, DNSNames: dnsNames}
	for _, u := range usages {
		switch u {
		case "server auth":
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		case "client auth":
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		default:
			return nil, fmt.Errorf("usage %q", u)
		}
	}
	return tmpl, nil
}
