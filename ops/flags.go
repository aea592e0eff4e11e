package ops

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// BindEnv gives every flag of fs a HEADCOUNT_<NAME> environment equivalent;
// a flag set on the command line wins.
func BindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("%s: %w", EnvName(f.Name), setErr)
			}
		}
	})
	return err
}

// EnvName is the environment variable of a flag: HEADCOUNT_ and the flag's
// name in upper case with '-' as '_'.
func EnvName(flag string) string {
	return "HEADCOUNT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// SetupLogging makes the default slog logger write to stderr at level
// (debug, info, warn, error) in format (text, json), as the --log-level and
// --log-format flags say.
func SetupLogging(level, format string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, opts)))
	default:
		return fmt.Errorf("--log-format %q: want text or json", format)
	}
	return nil
}
