package natsauth

import (
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// Credentials are one identity's user JWT and the seed of its key.
type Credentials struct {
	JWT  string
	Seed []byte
}

// Option connects with c, for a process's own connections.
func (c Credentials) Option() nats.Option { return nats.UserJWTAndSeed(c.JWT, string(c.Seed)) }

// WriteFile stores c as a .creds file readable by its owner only, for a
// child process (`--nats-creds`, HEADCOUNT_NATS_CREDS).
func (c Credentials) WriteFile(dir, name string) (string, error) {
	data, err := jwt.FormatUserConfig(c.JWT, c.Seed)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name+".creds")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", err
	}
	return path, nil
}
