package fleet

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectOptions are how every headcount process stays on NATS: it keeps
// reconnecting forever (a view rebuilds itself with a roll call, its clocks
// stopped meanwhile), is back within a fraction of a second of NATS, jittered
// so that a fleet does not reconnect in one burst, and logs a permission
// violation loudly, since it means a misconfigured identity.
func ConnectOptions(name string) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { slog.Error("NATS", "err", err) }),
	}
}
