package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/operator"
	"github.com/headcount-dev/headcount/natsembed"
)

func TestEveryFlagHasAnEnvironmentEquivalent(t *testing.T) {
	t.Setenv("HEADCOUNT_LOG_LEVEL", "debug")
	t.Setenv("HEADCOUNT_TARGET", "25")
	t.Setenv("HEADCOUNT_PLAN", "starter")
	root := newRoot()
	var seen []string
	up, _, err := root.Find([]string{"up"})
	require.NoError(t, err)
	up.RunE = func(cmd *cobra.Command, _ []string) error {
		cmd.Flags().VisitAll(func(f *pflag.Flag) { seen = append(seen, f.Name+"="+f.Value.String()) })
		return nil
	}
	root.SetArgs([]string{"up", "--plan", "enterprise"})
	require.NoError(t, root.ExecuteContext(context.Background()))
	require.Contains(t, seen, "target=25", "from HEADCOUNT_TARGET")
	require.Contains(t, seen, "plan=enterprise", "the command line wins over HEADCOUNT_PLAN")
	require.Contains(t, seen, "log-level=debug", "global flags too")
}

func TestBadEnvironmentValueIsAClearError(t *testing.T) {
	t.Setenv("HEADCOUNT_TARGET", "lots")
	root := newRoot()
	root.SetArgs([]string{"up"}) // refused before anything starts
	err := root.ExecuteContext(context.Background())
	require.ErrorContains(t, err, "HEADCOUNT_TARGET")
}

func TestBadFlagsAreRefusedBeforeAnythingStarts(t *testing.T) {
	for _, args := range [][]string{
		{"up", "--plan", "platinum"},
		{"up", "--target", "0"},
		{"up", "--min", "5", "--max", "2"},
		{"status", "--log-level", "loud"},
		{"status", "--log-format", "xml"},
		{"status", "--prefix", "a.*"},
	} {
		root := newRoot()
		root.SetArgs(args)
		root.SetOut(&bytes.Buffer{})
		err := root.ExecuteContext(context.Background())
		require.Error(t, err, strings.Join(args, " "))
	}
}

func TestBadNATSIdentityFlagsNameTheFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--nats-creds", "/nonexistent/x.creds"}, "--nats-creds"},
		{[]string{"status", "--nats-creds", "main.go", "--nats-nkey", "main.go"}, "exclude one another"},
		{[]string{"status", "--nats-tls-ca", "main.go"}, "--nats-tls-ca"},
		{[]string{"auth-callout"}, "issuer-seed"},
		{[]string{"auth-callout", "--issuer-seed", "main.go"}, "--issuer-seed"},
	} {
		root := newRoot()
		root.SetArgs(c.args)
		root.SetOut(&bytes.Buffer{})
		err := root.ExecuteContext(context.Background())
		require.ErrorContains(t, err, c.want, strings.Join(c.args, " "))
	}
}

func TestAnonymousStatusAgainstAnAuthenticatedNATSSaysWhatToGive(t *testing.T) {
	auth, err := operator.New(fleet.Subjects{Prefix: fleet.DefaultPrefix})
	require.NoError(t, err)
	s, err := natsembed.Start(natsembed.Options{Auth: auth})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })

	root := newRoot()
	root.SetArgs([]string{"status", "--nats-url", s.ClientURL()})
	err = root.ExecuteContext(context.Background())
	require.ErrorIs(t, err, nats.ErrAuthorization)
	require.ErrorContains(t, err, "--nats-creds (for headcount up: the reader credentials its banner prints)")

	// With the reader identity that up hands out, the same command connects.
	creds, err := auth.Issue(natsauth.Identity{Role: natsauth.RoleReader})
	require.NoError(t, err)
	file, err := creds.WriteFile(t.TempDir(), "reader")
	require.NoError(t, err)
	root = newRoot()
	root.SetArgs([]string{"status", "--nats-url", s.ClientURL(), "--nats-creds", file, "--wait", "10ms"})
	require.NoError(t, root.ExecuteContext(context.Background()))
}
