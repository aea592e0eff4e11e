package callout

import (
	"testing"

	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
)

func TestReviewOfReadsTheBoundPod(t *testing.T) {
	user := func(name string, extra map[string]authnv1.ExtraValue) authnv1.UserInfo {
		return authnv1.UserInfo{Username: name, Extra: extra}
	}
	bound := map[string]authnv1.ExtraValue{podNameKey: {"hn-7d9f-aaaaa"}}
	r, err := reviewOf(authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"nats"},
		User: user("system:serviceaccount:shop:hn-follower", bound)}, []string{"nats"})
	require.NoError(t, err)
	require.Equal(t, Review{Namespace: "shop", ServiceAccount: "hn-follower", Pod: "hn-7d9f-aaaaa"}, r)

	for name, st := range map[string]authnv1.TokenReviewStatus{
		"not authenticated": {Authenticated: false, Error: "expired", Audiences: []string{"nats"}, User: user("system:serviceaccount:shop:hn", bound)},
		"other audience":    {Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"}, User: user("system:serviceaccount:shop:hn", bound)},
		"a person":          {Authenticated: true, Audiences: []string{"nats"}, User: user("alice", nil)},
		"a node":            {Authenticated: true, Audiences: []string{"nats"}, User: user("system:node:n1", nil)},
	} {
		_, err := reviewOf(st, []string{"nats"})
		require.Error(t, err, name)
	}
	r, err = reviewOf(authnv1.TokenReviewStatus{Authenticated: true, User: user("system:serviceaccount:shop:hn", nil)}, nil)
	require.NoError(t, err)
	require.Empty(t, r.Pod, "a legacy token names no pod")
}
