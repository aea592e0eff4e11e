package main

import (
	"github.com/headcount-dev/headcount/cmd/internal/cli"

	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/headcount-dev/headcount/natsapi"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/callout"
	"github.com/headcount-dev/headcount/ops"
)

func authCalloutCmd(g *cli.Global) *cobra.Command {
	var (
		cfg                 callout.Config
		issuerSeed, account string
		binds, audiences    []string
		httpAddr            string
		kubeconfig          string
	)
	cmd := &cobra.Command{
		Use:   "auth-callout",
		Short: "NATS auth callout for Kubernetes: pods connect with their ServiceAccount token and get their role's subjects, named after the pod",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Subjects, err = g.Subjects(); err != nil {
				return err
			}
			if cfg.Issuer, err = natsauth.SeedKey(issuerSeed); err != nil {
				return fmt.Errorf("--issuer-seed: %w", err)
			}
			if len(binds) == 0 {
				return errors.New("--bind: at least one <namespace>/<serviceaccount>=<role>[:<service>]")
			}
			for _, b := range binds {
				bd, err := callout.ParseBinding(b)
				if err != nil {
					return fmt.Errorf("--bind: %w", err)
				}
				cfg.Bindings = append(cfg.Bindings, bd)
			}
			rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return fmt.Errorf("--kubeconfig: %w", err)
			}
			client, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("kubernetes client: %w", err)
			}
			cfg.Reviewer = callout.KubeReviewer{Client: client.AuthenticationV1(), Audiences: audiences}
			cfg.Account, cfg.Logger = account, slog.Default()
			lns, err := cli.Listen(cli.ListenFlag{Flag: "--http-addr", Addr: httpAddr})
			if err != nil {
				return err
			}
			defer cli.CloseAll(lns)
			nc, err := g.Connect("headcount-auth-callout")
			if err != nil {
				return err
			}
			defer nc.Close()
			svc, err := callout.Start(nc, cfg)
			if err != nil {
				return err
			}
			defer svc.Close()
			api, err := svc.ServeAPI(nc, cfg.Subjects, natsapi.HostID(natsapi.Callout))
			if err != nil {
				return err
			}
			defer func() { _ = api.Stop() }()
			reg := ops.NewRegistry()
			reg.MustRegister(svc.Collector())
			checks := &ops.Checks{}
			checks.Add("nats", func() error {
				if !nc.IsConnected() {
					return errors.New("NATS not connected")
				}
				return nil
			})
			mux := http.NewServeMux()
			ops.Mount(mux, reg, checks)
			slog.Info("auth callout started", "bindings", len(cfg.Bindings), "audiences", audiences, "http", lns[0].Addr().String())
			err = ops.Serve(cmd.Context(), ops.NewServer(mux, ops.HTTPLimits{}, slog.Default()), lns[0], 5*time.Second)
			_ = nc.Drain()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&issuerSeed, "issuer-seed", "", "file holding the account nkey seed (SA…) whose public key is the auth_callout issuer (required)")
	f.StringSliceVar(&binds, "bind", nil, "grant a role to a ServiceAccount's pods: <namespace>/<serviceaccount>=member:<service>|router:<service>|reader[:<service>]|observer[:<service>] (repeatable)")
	f.StringSliceVar(&audiences, "audience", []string{"nats"}, "audiences the projected token must be issued for")
	f.StringVar(&account, "account", "$G", "NATS account the users are placed in")
	f.DurationVar(&cfg.TTL, "ttl", 10*time.Minute, "lifetime of a grant: the client then reconnects and its current token is reviewed again")
	f.StringVar(&httpAddr, "http-addr", ":9091", "HTTP listener for /healthz /readyz /metrics")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster)")
	_ = cmd.MarkFlagRequired("issuer-seed")
	return cmd
}
