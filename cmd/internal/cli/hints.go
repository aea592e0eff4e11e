package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// WithHelpHint points a mistyped command line at the help of the command it
// reached: cobra's own hint is silenced with its usage text.
func WithHelpHint(cmd *cobra.Command, err error) error {
	msg := err.Error()
	for _, usage := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "required flag", "flag needs an argument", "invalid argument"} {
		if strings.HasPrefix(msg, usage) {
			return fmt.Errorf("%w; see %s --help", err, cmd.CommandPath())
		}
	}
	return err
}
