package cli

import (
	"log/slog"
	"net/http"

	"github.com/spf13/pflag"

	"github.com/headcount-dev/headcount/ops"
)

// HTTPFlags harden every HTTP listener of a command the same way.
type HTTPFlags struct{ Limits ops.HTTPLimits }

// Register adds the hardening flags to f.
func (h *HTTPFlags) Register(f *pflag.FlagSet) {
	def := ops.DefaultHTTPLimits()
	f.DurationVar(&h.Limits.ReadHeaderTimeout, "read-header-timeout", def.ReadHeaderTimeout, "time allowed to read a request's headers")
	f.DurationVar(&h.Limits.BodyTimeout, "body-timeout", def.BodyTimeout, "time allowed to read a request's body, from its headers (never cuts a response stream)")
	f.DurationVar(&h.Limits.IdleTimeout, "idle-timeout", def.IdleTimeout, "keep-alive timeout of idle client connections")
	f.IntVar(&h.Limits.MaxHeaderBytes, "max-header-bytes", def.MaxHeaderBytes, "largest request header block (JSON 431 above)")
}

// Server is a hardened server for handler.
func (h *HTTPFlags) Server(handler http.Handler) *http.Server {
	return ops.NewServer(handler, h.Limits, slog.Default())
}
