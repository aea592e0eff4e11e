package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/cmd/internal/cli"
)

// Every error a first-time user meets names the next step.
func TestErrorsNameTheNextStep(t *testing.T) {
	// A port nothing listens on: NATS is not running there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "nats://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "headcount"; see headcount --help`},
		{[]string{"up", "--bogus"}, "unknown flag: --bogus; see headcount up --help"},
		{[]string{"router"}, `required flag(s) "service" not set; see headcount router --help`},
		{[]string{"router", "--service", "demo", "--nats-url", closed, "--streaming-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0"},
			"no servers available for connection: start NATS, or give its address with --nats-url"},
		{[]string{"router", "--service", "demo", "--placement", "nearest"}, `--placement "nearest": want affinity or least-loaded`},
		{[]string{"router", "--service", "demo", "--placement-bound", "0.5"}, "--placement-bound 0.5: want a finite number ≥ 1"},
	} {
		root := newRoot()
		root.SetArgs(c.args)
		root.SetOut(&bytes.Buffer{})
		cmd, err := root.ExecuteContextC(context.Background())
		require.Error(t, err, strings.Join(c.args, " "))
		require.ErrorContains(t, cli.WithHelpHint(cmd, err), c.want, strings.Join(c.args, " "))
	}
}
