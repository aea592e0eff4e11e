package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/headcount-dev/headcount/telemetry"
)

// withTracing runs setupTracing after root's own preparations (flags,
// logging). Only this binary traces: the light headcount-sidecar links no
// OpenTelemetry exporter.
func withTracing(root *cobra.Command) {
	prepare := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if err := prepare(cmd, args); err != nil {
			return err
		}
		return setupTracing(cmd)
	}
}

// setupTracing gives the process its OpenTelemetry tracer provider when the
// OTEL_* environment names an OTLP endpoint (off otherwise), named after the
// command (headcount-router, headcount-up, …); the spans still buffered are
// flushed when the command returns.
func setupTracing(cmd *cobra.Command) error {
	service := "headcount-" + cmd.Name()
	shutdown, err := telemetry.Setup(cmd.Context(), service)
	if err != nil {
		return fmt.Errorf("OpenTelemetry (OTEL_* environment): %w", err)
	}
	if telemetry.Enabled() {
		slog.Info("tracing on: exporting OTLP spans", "service", service)
	}
	cobra.OnFinalize(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			slog.Warn("spans not flushed", "err", err)
		}
	})
	return nil
}
