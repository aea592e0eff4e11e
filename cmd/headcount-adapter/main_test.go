package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// headcount's flags take HEADCOUNT_* values, checked before anything starts;
// the library's flags keep their names and defaults adjusted for a container.
func TestFlags(t *testing.T) {
	cmd := newCommand()
	for _, name := range []string{"nats-url", "nats-creds", "nats-token-file", "nats-tls-ca", "prefix", "services", "http-addr", "external-metrics", "max-staleness",
		"service-label", "pod-selector", "verify-pod-ip", "no-verify-followers", "probe-timeout", "rollcall-settle", "shutdown-grace", "log-level", "log-format",
		"secure-port", "cert-dir", "tls-cert-file", "authentication-kubeconfig", "authorization-kubeconfig", "lister-kubeconfig"} {
		require.NotNil(t, cmd.Flags().Lookup(name), name)
	}
	require.Equal(t, "6443", cmd.Flags().Lookup("secure-port").DefValue)
	require.Equal(t, "", cmd.Flags().Lookup("cert-dir").DefValue, "self-signed certificate in memory by default")

	cmd = newCommand()
	cmd.SetArgs([]string{"--prefix", "bad prefix"})
	cmd.SetOut(&bytes.Buffer{})
	require.ErrorContains(t, cmd.ExecuteContext(context.Background()), "--prefix")

	t.Setenv("HEADCOUNT_MAX_STALENESS", "soon")
	cmd = newCommand()
	cmd.SetArgs(nil)
	cmd.SetOut(&bytes.Buffer{})
	require.ErrorContains(t, cmd.ExecuteContext(context.Background()), "HEADCOUNT_MAX_STALENESS")
}
