package callout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
)

// podNameKey is where TokenReview puts the pod a bound token belongs to.
const podNameKey = "authentication.kubernetes.io/pod-name"

// KubeReviewer verifies tokens with the Kubernetes TokenReview API (the
// service account needs `create` on tokenreviews, as in
// system:auth-delegator).
type KubeReviewer struct {
	// Client is a clientset's AuthenticationV1(): one TokenReview per token.
	Client authnv1client.TokenReviewsGetter
	// Audiences the token must be issued for (the projected token's
	// `audience`, e.g. "nats"); empty accepts the API server's own.
	Audiences []string
}

// Review asks the API server about token.
func (k KubeReviewer) Review(ctx context.Context, token string) (Review, error) {
	tr, err := k.Client.TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: k.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return Review{}, fmt.Errorf("TokenReview: %w", err)
	}
	return reviewOf(tr.Status, k.Audiences)
}

// reviewOf reads a TokenReview status: only authenticated ServiceAccount
// tokens for one of audiences pass.
func reviewOf(st authnv1.TokenReviewStatus, audiences []string) (Review, error) {
	if !st.Authenticated {
		return Review{}, fmt.Errorf("token not authenticated: %s", st.Error)
	}
	if len(audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(audiences, a) }) {
		return Review{}, fmt.Errorf("token audiences %v, want one of %v", st.Audiences, audiences)
	}
	// system:serviceaccount:<namespace>:<name>
	parts := strings.Split(st.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" {
		return Review{}, errors.New("not a ServiceAccount token: " + st.User.Username)
	}
	r := Review{Namespace: parts[2], ServiceAccount: parts[3]}
	if pods := st.User.Extra[podNameKey]; len(pods) == 1 {
		r.Pod = pods[0]
	}
	return r, nil
}
