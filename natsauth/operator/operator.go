// Package operator is the NATS trust chain `headcount up` makes for its
// embedded server: it configures the server and issues each process its
// identity. It is apart from natsauth because it links nats-server, which
// a client (the sidecar beside every follower) must not.
package operator

import (
	"errors"
	"fmt"

	"strings"
	"sync"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsauth"
)

// Authority is a NATS trust chain made in memory at start (decentralized
// JWTs: an operator, a system account and one headcount account) that issues
// a user JWT per process. The server trusts the operator, so users issued
// after it started need no reconfiguration; nothing outlives the process.
type Authority struct {
	subjects    fleet.Subjects
	operator    *jwt.OperatorClaims
	operatorKey nkeys.KeyPair // signs the account JWT again when a user is revoked
	account     nkeys.KeyPair
	sysPub      string

	mu       sync.Mutex
	accounts map[string]string  // public key → account JWT, for the resolver
	claims   *jwt.AccountClaims // the headcount account's, with its revocations
	resolver *server.MemAccResolver
}

// New makes fresh operator and account keys for subjects.
func New(s fleet.Subjects) (*Authority, error) {
	okp, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	opub, _ := okp.PublicKey()
	a := &Authority{subjects: s, operatorKey: okp, accounts: map[string]string{}, resolver: &server.MemAccResolver{}}
	var accountPubs [2]string
	for i, name := range []string{"SYS", "headcount"} {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return nil, err
		}
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if a.accounts[pub], err = ac.Encode(okp); err != nil {
			return nil, fmt.Errorf("account %s: %w", name, err)
		}
		accountPubs[i] = pub
		a.account, a.claims = kp, ac
	}
	a.sysPub = accountPubs[0]
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "headcount-up"
	oc.SystemAccount = a.sysPub
	token, err := oc.Encode(okp)
	if err != nil {
		return nil, err
	}
	// The server wants the claims as decoded from a signed token.
	if a.operator, err = jwt.DecodeOperatorClaims(token); err != nil {
		return nil, err
	}
	return a, nil
}

// ConfigureServer makes o trust only this authority: a client without a
// user JWT it issued is refused.
func (a *Authority) ConfigureServer(o *server.Options) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for pub, token := range a.accounts {
		if err := a.resolver.Store(pub, token); err != nil {
			return err
		}
	}
	o.TrustedOperators = []*jwt.OperatorClaims{a.operator}
	o.AccountResolver = a.resolver
	o.SystemAccount = a.sysPub
	return nil
}

// Issue makes a new key pair and a user JWT carrying the permissions of
// ids together: a process that runs several components in one connection
// (as `up` does: router, scaler, leader) holds all of their grants.
func (a *Authority) Issue(ids ...natsauth.Identity) (natsauth.Credentials, error) {
	if len(ids) == 0 {
		return natsauth.Credentials{}, errors.New("no identity to issue")
	}
	var perms jwt.Permissions
	var names []string
	for _, id := range ids {
		p, err := natsauth.Permissions(a.subjects, id)
		if err != nil {
			return natsauth.Credentials{}, err
		}
		perms.Pub.Allow.Add(p.Pub.Allow...)
		perms.Sub.Allow.Add(p.Sub.Allow...)
		if p.Resp != nil {
			perms.Resp = p.Resp
		}
		names = append(names, id.String())
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return natsauth.Credentials{}, err
	}
	upub, _ := ukp.PublicKey()
	seed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = strings.Join(names, ",")
	uc.Permissions = perms
	token, err := uc.Encode(a.account)
	if err != nil {
		return natsauth.Credentials{}, err
	}
	return natsauth.Credentials{JWT: token, Seed: seed}, nil
}

// Revoke ends the users of creds on s, a server this authority configured:
// their keys are revoked in the account JWT, which s applies at once,
// closing their connections and refusing them from then on. Every
// credential has a key of its own, so nothing else is affected. The
// revocations stay in the account JWT for the authority's life (a few dozen
// bytes each).
func (a *Authority) Revoke(s *server.Server, creds ...natsauth.Credentials) error {
	if len(creds) == 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range creds {
		kp, err := nkeys.FromSeed(c.Seed)
		if err != nil {
			return err
		}
		pub, _ := kp.PublicKey()
		a.claims.Revoke(pub)
	}
	token, err := a.claims.Encode(a.operatorKey)
	if err != nil {
		return err
	}
	claims, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		return err
	}
	a.accounts[claims.Subject] = token
	if err := a.resolver.Store(claims.Subject, token); err != nil {
		return err
	}
	acc, err := s.LookupAccount(claims.Subject)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	s.UpdateAccountClaims(acc, claims)
	return nil
}
