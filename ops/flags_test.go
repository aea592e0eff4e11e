package ops

import (
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestEnvName(t *testing.T) {
	require.Equal(t, "HEADCOUNT_NATS_URL", EnvName("nats-url"))
	require.Equal(t, "HEADCOUNT_SCALE_DOWN_WINDOW", EnvName("scale-down-window"))
}

func TestBindEnvCommandLineWins(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	a := fs.String("alpha-one", "default", "")
	b := fs.String("beta", "default", "")
	t.Setenv("HEADCOUNT_ALPHA_ONE", "from-env")
	t.Setenv("HEADCOUNT_BETA", "from-env")
	require.NoError(t, fs.Parse([]string{"--beta", "from-flag"}))
	require.NoError(t, BindEnv(fs))
	require.Equal(t, "from-env", *a)
	require.Equal(t, "from-flag", *b)
}
