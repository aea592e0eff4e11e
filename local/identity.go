package local

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/operator"
)

// natsAccess gives each process of `up` its own NATS identity. With the
// embedded server, up is the authority: it issues a user JWT per process
// (children get theirs in a file named by HEADCOUNT_NATS_CREDS). With an
// external NATS, every process uses the credentials up was given.
type natsAccess struct {
	url      string
	auth     *operator.Authority // nil: external NATS
	server   *server.Server      // the embedded server, where revocations apply
	external natsauth.Client
	dir      string // private directory of the children's credentials
	logger   *slog.Logger

	mu     sync.Mutex
	issued map[string][]natsauth.Credentials // by child name, since its last revocation
}

// connect opens up's own connection, with the identities of the
// components it runs in process.
func (a *natsAccess) connect(ids ...natsauth.Identity) (*nats.Conn, error) {
	opts := fleet.ConnectOptions("headcount-up")
	if a.auth != nil {
		creds, err := a.auth.Issue(ids...)
		if err != nil {
			return nil, err
		}
		opts = append(opts, creds.Option())
	} else {
		ext, err := a.external.Options()
		if err != nil {
			return nil, err
		}
		opts = append(opts, ext...)
	}
	nc, err := nats.Connect(a.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", a.url, err)
	}
	return nc, nil
}

// env is a child's NATS settings: its URL and, with the embedded server, a
// fresh credentials file for id (a restarted child gets a new key).
func (a *natsAccess) env(id natsauth.Identity) ([]string, error) {
	env := []string{"HEADCOUNT_NATS_URL=" + a.url}
	if a.auth == nil {
		return append(env, a.external.Env()...), nil
	}
	path, err := a.credsFile(id.Name, id)
	if err != nil {
		return nil, err
	}
	return append(env, "HEADCOUNT_NATS_CREDS="+path), nil
}

func (a *natsAccess) credsFile(name string, id natsauth.Identity) (string, error) {
	creds, err := a.auth.Issue(id)
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	a.issued[name] = append(a.issued[name], creds)
	a.mu.Unlock()
	return creds.WriteFile(a.dir, name)
}

// exited revokes every identity issued to follower id's children so far and
// removes their file: the supervisor calls it once their processes are gone
// (stopped, or crashed before a restart, which gets a new identity), so
// credentials taken from a stopped follower no longer connect or publish.
func (a *natsAccess) exited(id string) {
	if a.auth == nil {
		return // an external NATS: its own configuration decides
	}
	a.mu.Lock()
	creds := a.issued[id]
	delete(a.issued, id)
	a.mu.Unlock()
	if len(creds) == 0 {
		return
	}
	err := a.auth.Revoke(a.server, creds...)
	if err == nil {
		if err = os.Remove(filepath.Join(a.dir, id+".creds")); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if err != nil {
		a.logger.Error("cannot revoke the NATS identity of an exited follower", "follower", id, "err", err)
		return
	}
	a.logger.Debug("NATS identity revoked", "follower", id, "credentials", len(creds))
}

// newNATSAccess makes the authority and its private directory for an
// embedded server; close removes the directory.
func newNATSAccess(cfg UpConfig) (a *natsAccess, close func(), err error) {
	if cfg.NATSURL != "" {
		return &natsAccess{url: cfg.NATSURL, external: cfg.NATSAuth, logger: cfg.Logger}, func() {}, nil
	}
	auth, err := operator.New(cfg.Subjects)
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "headcount-up-") // mode 0700
	if err != nil {
		return nil, nil, err
	}
	return &natsAccess{auth: auth, dir: dir, logger: cfg.Logger, issued: map[string][]natsauth.Credentials{}},
		func() { _ = os.RemoveAll(dir) }, nil
}
