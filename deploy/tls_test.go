package deploy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/headcount-dev/headcount/internal/certtest"
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

// installs runs check on every rendering a user applies: each overlay (in
// namespace headcount), overlays/hpa with the external metrics component,
// and each chart install (in chartNamespace).
func installs(t *testing.T, check func(t *testing.T, namespace string, r rendered)) {
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) { check(t, "headcount", decode(t, dir)) })
	}
	t.Run("overlays/hpa+adapter/external", func(t *testing.T) {
		check(t, "headcount", composed(t, "hpa", "adapter/external"))
	})
	forEachInstall(t, func(t *testing.T, _ map[string]any, r rendered) { check(t, chartNamespace, r) })
}

// certManagerSecrets plays cert-manager's CA issuer on a rendering: each CA
// Certificate (isCA, from a selfSigned Issuer) becomes a test CA, and each
// Certificate from an Issuer of that CA's Secret becomes the Secret
// cert-manager would write (ca.crt, tls.crt, tls.key) with the Certificate's
// common name, DNS names and extended key usages. The rendered Secrets
// (the chart's generated ones) come along; a Certificate whose issuer is
// not rendered fails the test.
func certManagerSecrets(t *testing.T, r rendered) map[string]*corev1.Secret {
	t.Helper()
	secrets := maps.Clone(r.secrets)
	issuers := map[string]map[string]any{}
	for _, i := range r.other["Issuer"] {
		issuers[i["metadata"].(map[string]any)["name"].(string)] = i["spec"].(map[string]any)
	}
	issuerOf := func(spec map[string]any) map[string]any {
		ref := spec["issuerRef"].(map[string]any)
		require.Equal(t, "Issuer", ref["kind"], "an Issuer of this namespace")
		issuer := issuers[ref["name"].(string)]
		require.NotNil(t, issuer, "Issuer %s is rendered", ref["name"])
		return issuer
	}
	cas := map[string]*certtest.CA{} // by the CA's Secret
	var leaves []map[string]any
	for _, c := range r.other["Certificate"] {
		spec := c["spec"].(map[string]any)
		if spec["isCA"] != true {
			leaves = append(leaves, spec)
			continue
		}
		require.Contains(t, issuerOf(spec), "selfSigned", "a CA bootstrapped by a self-signed Issuer")
		ca, err := certtest.New(spec["commonName"].(string))
		require.NoError(t, err)
		cas[spec["secretName"].(string)] = ca
	}
	for _, spec := range leaves {
		issuer := issuerOf(spec)
		require.Contains(t, issuer, "ca", "a CA Issuer")
		ca := cas[issuer["ca"].(map[string]any)["secretName"].(string)]
		require.NotNil(t, ca, "the Issuer's CA is a rendered Certificate")
		var dnsNames, usages []string
		dns, _ := spec["dnsNames"].([]any)
		for _, n := range dns {
			dnsNames = append(dnsNames, n.(string))
		}
		us, _ := spec["usages"].([]any)
		for _, u := range us {
			usages = append(usages, u.(string))
		}
		tmpl, err := certtest.Described(spec["commonName"].(string), dnsNames, usages)
		require.NoError(t, err)
		der, key, err := ca.Issue(tmpl)
		require.NoError(t, err)
		name := spec["secretName"].(string)
		secrets[name] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{
			"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.DER}),
			"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			"tls.key": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		}}
	}
	return secrets
}

// argValue is the value given to flag in args ("--flag value").
func argValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	i := slices.Index(args, flag)
	require.True(t, i >= 0 && i+1 < len(args), "%s in %v", flag, args)
	return args[i+1]
}

// In every install with KEDA, every overlay and every chart install, each
// ScaledObject (decoded into KEDA's own types) dials the scaler with TLS:
// its trigger has an authenticationRef to a TriggerAuthentication giving
// caCert and a client certificate, and no unsafeSsl; the scaler serves TLS
// and requires that client certificate; and with the certificates the
// install makes (the chart's Secrets, or cert-manager's from the rendered
// Certificates) KEDA's side and the scaler's complete a mutual TLS
// handshake for the address KEDA dials, which is the scaler's Service.
func TestEveryInstallDialsTheScalerWithTLS(t *testing.T) {
	seen := 0
	installs(t, func(t *testing.T, namespace string, r rendered) {
		if len(r.other["ScaledObject"]) == 0 {
			assert.NotEmpty(t, r.hpas, "without KEDA, an HPA")
			assert.Empty(t, r.other["TriggerAuthentication"], "without KEDA, nothing of KEDA's")
			return
		}
		secrets := certManagerSecrets(t, r)
		for _, obj := range r.other["ScaledObject"] {
			seen++
			var so kedav1alpha1.ScaledObject
			strictInto(t, obj, &so)
			require.Len(t, so.Spec.Triggers, 1)
			trig := so.Spec.Triggers[0]
			require.Equal(t, "external-push", trig.Type)
			require.NotNil(t, trig.AuthenticationRef, "the trigger authenticates")
			assert.Contains(t, []string{"", "TriggerAuthentication"}, trig.AuthenticationRef.Kind)
			assert.NotEqual(t, "true", trig.Metadata["unsafeSsl"], "KEDA verifies the scaler")
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
			svc := r.services[strings.TrimSuffix(host, "."+namespace+".svc")]
			require.NotNil(t, svc, "%s is a Service of namespace %s", host, namespace)
			assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(sc.pod.Labels)), "%s selects the scalers", host)
			assert.Nil(t, c.ReadinessProbe.GRPC, "no plaintext gRPC probe on a TLS port")
			cert := argValue(t, c.Args, "--tls-cert")
			dir := filepath.Dir(cert)
			assert.Equal(t, filepath.Join(dir, "tls.key"), argValue(t, c.Args, "--tls-key"))
			assert.Equal(t, filepath.Join(dir, "ca.crt"), argValue(t, c.Args, "--tls-client-ca"), "the scaler requires a client certificate")
			srv := secrets[mountedSecret(t, sc, c, dir)]
			cli := secrets[params["tlsClientCert"].Name]
			require.NotNil(t, srv, "the scaler's Secret is rendered or written by a rendered Certificate")
			require.NotNil(t, cli, "KEDA's Secret is rendered or written by a rendered Certificate")
			serverDir := secretFiles(t, srv)
			serverTLS, err := scaler.TLSConfig(filepath.Join(serverDir, "tls.crt"), filepath.Join(serverDir, "tls.key"), filepath.Join(serverDir, "ca.crt"))
			require.NoError(t, err)
			roots := x509.NewCertPool()
			require.True(t, roots.AppendCertsFromPEM(secrets[params["caCert"].Name].Data[params["caCert"].Key]), "caCert is a PEM CA")
			keda, err := tls.X509KeyPair(cli.Data[params["tlsClientCert"].Key], secrets[params["tlsClientKey"].Name].Data[params["tlsClientKey"].Key])
			require.NoError(t, err)
			require.NoError(t, handshake(t, serverTLS, &tls.Config{RootCAs: roots, ServerName: host, Certificates: []tls.Certificate{keda}}),
				"KEDA's side verifies the scaler for %s and is verified", host)
			assert.Error(t, handshake(t, serverTLS, &tls.Config{RootCAs: roots, ServerName: host}), "without KEDA's certificate: refused")
		}
	})
	assert.NotZero(t, seen)
}

// Every APIService of every install (overlays/hpa, with the external
// metrics component too, and the chart's) verifies the adapter: never
// insecureSkipTLSVerify, and a caBundle, or cert-manager's injection of it
// from a rendered Certificate, that verifies the serving certificate the
// adapter is given for the Service the APIService names.
func TestEveryAPIServiceVerifiesTheAdapter(t *testing.T) {
	seen := 0
	installs(t, func(t *testing.T, namespace string, r rendered) {
		if len(r.other["APIService"]) == 0 {
			return
		}
		secrets := certManagerSecrets(t, r)
		ad := workloadByRole(t, r, "adapter")
		c := ad.pod.Spec.Containers[0]
		dir := filepath.Dir(argValue(t, c.Args, "--tls-cert-file"))
		assert.Equal(t, filepath.Join(dir, "tls.key"), argValue(t, c.Args, "--tls-private-key-file"))
		serving := secrets[mountedSecret(t, ad, c, dir)]
		require.NotNil(t, serving, "the adapter's Secret is rendered or written by a rendered Certificate")
		pair, err := tls.X509KeyPair(serving.Data["tls.crt"], serving.Data["tls.key"])
		require.NoError(t, err)
		for _, a := range r.other["APIService"] {
			seen++
			spec := a["spec"].(map[string]any)
			assert.NotContains(t, spec, "insecureSkipTLSVerify")
			svc := spec["service"].(map[string]any)
			require.Equal(t, namespace, svc["namespace"])
			require.Contains(t, r.services, svc["name"], "the APIService's Service is rendered")
			assert.True(t, labels.SelectorFromSet(r.services[svc["name"].(string)].Spec.Selector).Matches(labels.Set(ad.pod.Labels)))
			dnsName := svc["name"].(string) + "." + namespace + ".svc"
			var bundle []byte
			if b, ok := spec["caBundle"].(string); ok {
				bundle, err = base64.StdEncoding.DecodeString(b)
				require.NoError(t, err)
			} else {
				annotations, _ := a["metadata"].(map[string]any)["annotations"].(map[string]any)
				inject, _ := annotations["cert-manager.io/inject-ca-from"].(string)
				certNS, certName, ok := strings.Cut(inject, "/")
				require.True(t, ok, "a caBundle, or cert-manager's inject-ca-from <namespace>/<Certificate>")
				assert.Equal(t, namespace, certNS)
				cert := byName(r.other["Certificate"], certName)
				require.NotNil(t, cert, "Certificate %s is rendered", certName)
				bundle = secrets[cert["spec"].(map[string]any)["secretName"].(string)].Data["ca.crt"]
			}
			roots := x509.NewCertPool()
			require.True(t, roots.AppendCertsFromPEM(bundle), "the CA bundle is a PEM CA")
			require.NoError(t, handshake(t, &tls.Config{Certificates: []tls.Certificate{pair}}, &tls.Config{RootCAs: roots, ServerName: dnsName}),
				"the API server's side verifies the adapter as %s", dnsName)
		}
	})
	assert.NotZero(t, seen)
}
