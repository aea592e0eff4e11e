package local

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// listenError names the flag and address that could not be bound and, when
// the address is taken, the likely cause and the way out.
func listenError(flag, addr string, err error) error {
	// nats-server reports a taken port in its own words, not as an errno.
	if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%s %s: %w: another `headcount up` is probably running; stop it, or move the ports with "+
			"--nats-addr, --streaming-addr, --control-addr and --scaler-addr (127.0.0.1:0 picks a free one)", flag, addr, err)
	}
	return fmt.Errorf("%s %s: %w", flag, addr, err)
}
