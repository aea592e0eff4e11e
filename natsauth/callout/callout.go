// Package callout is the NATS auth callout service for Kubernetes: a pod
// connects with its projected ServiceAccount token, the service verifies it
// through the TokenReview API and grants the permissions of the role bound
// to the pod's ServiceAccount, with the pod's own name as its identity. A
// follower pod can thus publish only its own report subject: it cannot
// speak for another pod, even of the same service.
package callout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/defaults"
	"github.com/headcount-dev/headcount/natsauth"
)

// Subject is where nats-server sends authorization requests.
const Subject = "$SYS.REQ.USER.AUTH"

// Review is what the Kubernetes API says about a token.
type Review struct {
	Namespace, ServiceAccount string
	Pod                       string // the pod the token is bound to; "" for a token bound to none
}

// TokenReviewer verifies a token; an error means it is not authenticated.
type TokenReviewer interface {
	Review(ctx context.Context, token string) (Review, error)
}

// Binding grants a role to the pods of one ServiceAccount, for one service
// (members and routers; "" lets a reader watch every service).
type Binding struct {
	Namespace, ServiceAccount string
	Role                      natsauth.Role
	Service                   string
}

// ParseBinding reads `<namespace>/<serviceaccount>=<role>[:<service>]`.
func ParseBinding(s string) (Binding, error) {
	who, grant, ok := strings.Cut(s, "=")
	ns, sa, ok2 := strings.Cut(who, "/")
	if !ok || !ok2 || ns == "" || sa == "" {
		return Binding{}, fmt.Errorf("binding %q: want <namespace>/<serviceaccount>=<role>[:<service>]", s)
	}
	role, service, _ := strings.Cut(grant, ":")
	b := Binding{Namespace: ns, ServiceAccount: sa, Role: natsauth.Role(role), Service: service}
	// A placeholder name: the real one is the pod's, known at connect time.
	probe := natsauth.Identity{Role: b.Role, Service: service, Name: "pod"}
	if err := probe.Validate(); err != nil {
		return Binding{}, fmt.Errorf("binding %q: %w", s, err)
	}
	return b, nil
}

// Config configures the service.
type Config struct {
	Subjects fleet.Subjects
	Reviewer TokenReviewer
	Bindings []Binding
	// Issuer signs the responses and the user JWTs: the account key named
	// as `issuer` in the server's auth_callout block.
	Issuer nkeys.KeyPair
	// Account the users are placed in (default "$G", the global account of
	// a server configured without accounts).
	Account string
	// TTL bounds a grant: the server disconnects the user when it expires and
	// the client reconnects with its current token, reviewed again (default
	// 10 min). A deleted pod's token stops passing review.
	TTL           time.Duration
	ReviewTimeout time.Duration // default 5 s
	Logger        *slog.Logger
}

// Service answers the server's authorization requests.
type Service struct {
	cfg      Config
	bindings map[[2]string]Binding
	sub      *nats.Subscription
	answers  *prometheus.CounterVec
}

// Start subscribes on nc, which must be one of the server's auth_users.
// Replicas share the work in one queue group.
func Start(nc *nats.Conn, cfg Config) (*Service, error) {
	switch {
	case cfg.Reviewer == nil:
		return nil, errors.New("auth callout: Config.Reviewer is nil")
	case cfg.Issuer == nil:
		return nil, errors.New("auth callout: Config.Issuer is nil")
	}
	if pub, err := cfg.Issuer.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("auth callout: Config.Issuer (public key %q): want an account nkey (seed SA…)", pub)
	}
	cfg.Account = cmp.Or(cfg.Account, "$G")
	defaults.Positive(&cfg.TTL, 10*time.Minute)
	defaults.Positive(&cfg.ReviewTimeout, 5*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	s := &Service{cfg: cfg, bindings: map[[2]string]Binding{},
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_auth_callout_answers_total",
			Help: "Authorization requests answered, by result (granted, or why denied).",
		}, []string{"result"})}
	for _, b := range cfg.Bindings {
		s.bindings[[2]string{b.Namespace, b.ServiceAccount}] = b
	}
	sub, err := nc.QueueSubscribe(Subject, "headcount-auth-callout", s.handle)
	if err != nil {
		return nil, err
	}
	s.sub = sub
	return s, nc.Flush()
}

// Collector exposes the answers counter.
func (s *Service) Collector() prometheus.Collector { return s.answers }

// Close stops answering.
func (s *Service) Close() { _ = s.sub.Unsubscribe() }

func (s *Service) handle(m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		s.answers.WithLabelValues("bad_request").Inc()
		s.cfg.Logger.Warn("auth callout: undecodable request", "err", err)
		return // the server times the client out
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	id, reason, err := s.authorize(req)
	if err != nil {
		s.answers.WithLabelValues(reason).Inc()
		s.cfg.Logger.Warn("auth callout: denied", "reason", reason, "err", err, "host", req.ClientInformation.Host)
		resp.Error = "not authorized" // the client learns nothing more
	} else if resp.Jwt, err = s.userJWT(req.UserNkey, id); err != nil {
		s.answers.WithLabelValues("issue").Inc()
		s.cfg.Logger.Error("auth callout: cannot issue", "identity", id.String(), "err", err)
		resp.Jwt, resp.Error = "", "not authorized"
	} else {
		s.answers.WithLabelValues("granted").Inc()
		s.cfg.Logger.Debug("auth callout: granted", "identity", id.String())
	}
	token, err := resp.Encode(s.cfg.Issuer)
	if err != nil {
		s.cfg.Logger.Error("auth callout: cannot sign the response", "err", err)
		return
	}
	_ = m.Respond([]byte(token))
}

// authorize maps the connecting token to an identity; reason labels a denial.
func (s *Service) authorize(req *jwt.AuthorizationRequestClaims) (natsauth.Identity, string, error) {
	token := req.ConnectOptions.Token
	if token == "" {
		return natsauth.Identity{}, "no_token", errors.New("no token in CONNECT")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReviewTimeout)
	defer cancel()
	rev, err := s.cfg.Reviewer.Review(ctx, token)
	if err != nil {
		return natsauth.Identity{}, "review", err
	}
	b, ok := s.bindings[[2]string{rev.Namespace, rev.ServiceAccount}]
	if !ok {
		return natsauth.Identity{}, "unbound", fmt.Errorf("no binding for %s/%s", rev.Namespace, rev.ServiceAccount)
	}
	id := natsauth.Identity{Role: b.Role, Service: b.Service}
	if b.Role != natsauth.RoleReader {
		// The name is the pod's, from the token the kubelet bound to it:
		// nothing the pod says about itself.
		if rev.Pod == "" {
			return natsauth.Identity{}, "no_pod", fmt.Errorf("token of %s/%s is not bound to a pod", rev.Namespace, rev.ServiceAccount)
		}
		id.Name = rev.Pod
	}
	if err := id.Validate(); err != nil {
		return natsauth.Identity{}, "bad_name", err
	}
	return id, "", nil
}

func (s *Service) userJWT(userKey string, id natsauth.Identity) (string, error) {
	perms, err := natsauth.Permissions(s.cfg.Subjects, id)
	if err != nil {
		return "", err
	}
	uc := jwt.NewUserClaims(userKey)
	uc.Name = id.String()
	uc.Audience = s.cfg.Account
	uc.Expires = time.Now().Add(s.cfg.TTL).Unix()
	uc.Permissions = perms
	return uc.Encode(s.cfg.Issuer)
}
