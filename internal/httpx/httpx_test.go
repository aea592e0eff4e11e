package httpx_test

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/headcount-dev/headcount/internal/httpx"
)

// Died tells an upstream that died under a request from other failures,
// including the way net/http's HTTP/2 client fails the requests sharing a
// connection it closed after a write failed (its message, as Go 1.26 has it).
func TestDiedUnderTheRequest(t *testing.T) {
	for err, died := range map[error]bool{
		fmt.Errorf("read: %w", syscall.ECONNRESET):                               true,
		fmt.Errorf("write: %w", syscall.EPIPE):                                   true,
		io.ErrUnexpectedEOF:                                                      true,
		errors.New("http2: client connection force closed via ClientConn.Close"): true,
		&httpx.DialError{Err: syscall.ECONNREFUSED}:                              false,
		errors.New("net/http: timeout awaiting response headers"):                false,
		nil: false,
	} {
		assert.Equal(t, died, httpx.Died(err), "%v", err)
	}
}
