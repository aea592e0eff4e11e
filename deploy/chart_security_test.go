package deploy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/headcount-dev/headcount/scaler"
)

// strictInto decodes an object kept as a map (a kind outside client-go's
// scheme) into its own Go type, refusing unknown fields.
func strictInto(t *testing.T, obj map[string]any, into any) {
	t.Helper()
	raw, err := yaml.Marshal(obj)
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(raw, into))
}

func byName(objs []map[string]any, name string) map[string]any {
	for _, o := range objs {
		if o["metadata"].(map[string]any)["name"] == name {
			return o
		}
	}
	return nil
}

// workloadByRole is the one workload whose pods have role.
func workloadByRole(t *testing.T, r rendered, role string) workload {
	t.Helper()
	var found []workload
	for _, w := range r.workloads {
		if w.pod.Labels["headcount.dev/role"] == role {
			found = append(found, w)
		}
	}
	require.Len(t, found, 1, "one %s workload", role)
	return found[0]
}

// mountedSecret is the Secret a container mounts at dir.
func mountedSecret(t *testing.T, w workload, c corev1.Container, dir string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			for _, v := range w.pod.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					return v.Secret.SecretName
				}
			}
		}
	}
	t.Fatalf("%s mounts no Secret at %s", w.name, dir)
	return ""
}

// secretFiles writes a rendered Secret's keys into a directory, as the
// kubelet would mount it.
func secretFiles(t *testing.T, s *corev1.Secret) string {
	t.Helper()
	dir := t.TempDir()
	for k, v := range s.Data {
		require.NoError(t, os.WriteFile(filepath.Join(dir, k), v, 0o600))
	}
	return dir
}

// handshake runs a TLS handshake between server and client on loopback:
// nil only if both sides accept the other.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		srvErr <- tls.Server(c, server).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	cliErr := tls.Client(c, client).Handshake()
	if cliErr != nil {
		c.Close()
	}
	return errors.Join(cliErr, <-srvErr)
}

// certificateNames is, for the cert-manager install, the DNS names of the
// Certificate writing each Secret.
func certificateNames(t *testing.T, r rendered) map[string][]string {
	t.Helper()
	names := map[string][]string{}
	for _, c := range r.other["Certificate"] {
		spec := c["spec"].(map[string]any)
		var dns []string
		if d, ok := spec["dnsNames"].([]any); ok {
			for _, n := range d {
				dns = append(dns, n.(string))
			}
		}
		names[spec["secretName"].(string)] = dns
	}
	return names
}

// In every install with KEDA, every ScaledObject (decoded into KEDA's own
// types) dials the scaler with TLS: its trigger has an authenticationRef
// to a TriggerAuthentication giving caCert and a client certificate; the
// scaler serves TLS and requires that client certificate; and (with the
// chart's certificates) KEDA's side and the scaler's complete a mutual TLS
// handshake for the address KEDA dials.
func TestChartKEDADialsTheScalerWithTLS(t *testing.T) {
	seen := 0
	forEachInstall(t, func(t *testing.T, vals map[string]any, r rendered) {
		if len(r.other["ScaledObject"]) == 0 {
			assert.NotEmpty(t, r.hpas, "without KEDA, an HPA")
			return
		}
		for _, obj := range r.other["ScaledObject"] {
			seen++
			var so kedav1alpha1.ScaledObject
			strictInto(t, obj, &so)
			require.Len(t, so.Spec.Triggers, 1)
			trig := so.Spec.Triggers[0]
			require.Equal(t, "external-push", trig.Type)
			require.NotNil(t, trig.AuthenticationRef, "the trigger authenticates")
			var ta kedav1alpha1.TriggerAuthentication
			ref := byName(r.other["TriggerAuthentication"], trig.AuthenticationRef.Name)
			require.NotNil(t, ref, "TriggerAuthentication %s is rendered", trig.AuthenticationRef.Name)
			strictInto(t, ref, &ta)
			params := map[string]kedav1alpha1.AuthSecretTargetRef{}
			for _, s := range ta.Spec.SecretTargetRef {
				params[s.Parameter] = s
			}
			for _, p := range []string{"caCert", "tlsClientCert", "tlsClientKey"} {
				require.Contains(t, params, p, "KEDA dials TLS (caCert) with a client certificate")
			}
			addr := trig.Metadata["scalerAddress"]
			host, _, err := net.SplitHostPort(addr)
			require.NoError(t, err)

			sc := workloadByRole(t, r, "scaler")
			c := sc.pod.Spec.Containers[0]
			args := strings.Join(c.Args, " ")
			for _, f := range []string{"--tls-cert /etc/headcount/tls/tls.crt", "--tls-key /etc/headcount/tls/tls.key", "--tls-client-ca /etc/headcount/tls/ca.crt"} {
				require.Contains(t, args, f, "the scaler serves TLS and requires KEDA's certificate")
			}
			assert.Nil(t, c.ReadinessProbe.GRPC, "no plaintext gRPC probe on a TLS port")
			assert.True(t, strings.HasPrefix(host, sc.name+"."), "%s is the scaler's Service", addr)
			serverSecret := mountedSecret(t, sc, c, "/etc/headcount/tls")
			clientSecret := params["tlsClientCert"].Name

			if names := certificateNames(t, r); len(names) > 0 {
				assert.Contains(t, names[serverSecret], host, "cert-manager names the address KEDA dials")
				assert.Contains(t, names, clientSecret, "cert-manager writes KEDA's client certificate")
				return
			}
			srv, cli := r.secrets[serverSecret], r.secrets[clientSecret]
			require.NotNil(t, srv, serverSecret)
			require.NotNil(t, cli, clientSecret)
			dir := secretFiles(t, srv)
			serverTLS, err := scaler.TLSConfig(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt"))
			require.NoError(t, err)
			roots := x509.NewCertPool()
			require.True(t, roots.AppendCertsFromPEM(cli.Data[params["caCert"].Key]))
			keda, err := tls.X509KeyPair(cli.Data[params["tlsClientCert"].Key], cli.Data[params["tlsClientKey"].Key])
			require.NoError(t, err)
			require.NoError(t, handshake(t, serverTLS, &tls.Config{RootCAs: roots, ServerName: host, Certificates: []tls.Certificate{keda}}),
				"KEDA's side verifies the scaler for %s and is verified", host)
			assert.Error(t, handshake(t, serverTLS, &tls.Config{RootCAs: roots, ServerName: host}), "without KEDA's certificate: refused")
		}
	})
	assert.NotZero(t, seen)
}

// With the adapter, its APIServices verify it: a caBundle (or cert-manager's
// injection of it) that verifies the adapter's serving certificate for its
// Service, never insecureSkipTLSVerify.
func TestChartAPIServiceVerifiesTheAdapter(t *testing.T) {
	seen := 0
	forEachInstall(t, func(t *testing.T, vals map[string]any, r rendered) {
		for _, a := range r.other["APIService"] {
			seen++
			spec := a["spec"].(map[string]any)
			assert.NotContains(t, spec, "insecureSkipTLSVerify")
			svc := spec["service"].(map[string]any)
			dnsName := svc["name"].(string) + "." + svc["namespace"].(string) + ".svc"
			ad := workloadByRole(t, r, "adapter")
			secret := mountedSecret(t, ad, ad.pod.Spec.Containers[0], "/etc/headcount/tls")
			if names := certificateNames(t, r); len(names) > 0 {
				inject := a["metadata"].(map[string]any)["annotations"].(map[string]any)["cert-manager.io/inject-ca-from"]
				assert.Equal(t, chartNamespace+"/"+secret, inject, "cainjector fills the caBundle")
				assert.Contains(t, names[secret], dnsName)
				continue
			}
			bundle, err := base64.StdEncoding.DecodeString(spec["caBundle"].(string))
			require.NoError(t, err)
			roots := x509.NewCertPool()
			require.True(t, roots.AppendCertsFromPEM(bundle), "caBundle is a PEM CA")
			require.NotNil(t, r.secrets[secret], secret)
			pair, err := tls.X509KeyPair(r.secrets[secret].Data["tls.crt"], r.secrets[secret].Data["tls.key"])
			require.NoError(t, err)
			require.NoError(t, handshake(t, &tls.Config{Certificates: []tls.Certificate{pair}}, &tls.Config{RootCAs: roots, ServerName: dnsName}),
				"the API server's side verifies the adapter as %s", dnsName)
		}
	})
	assert.NotZero(t, seen)
}
