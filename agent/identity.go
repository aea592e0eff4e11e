package agent

import (
	"encoding/json"
	"net/http"

	"github.com/headcount-dev/headcount/fleet"
)

// IdentityHandler answers routers' verification probes (fleet.IdentityPath)
// with this agent's service, id and incarnation and the probe's nonce. Mount
// it on the control port that the reports advertise.
func (a *Agent) IdentityHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nonce := r.URL.Query().Get("nonce")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet || !fleet.ValidNonce(nonce) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"GET with a nonce of 16-64 hex digits","reason":"bad_probe"}` + "\n"))
			return
		}
		_ = json.NewEncoder(w).Encode(fleet.Identity{
			Service: a.cfg.Service, Follower: a.cfg.Follower, Incarnation: a.report.Incarnation, Nonce: nonce,
		})
	})
}
