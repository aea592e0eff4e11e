package callout

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
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

func TestKubeReviewerSendsTheTokenAndAudiences(t *testing.T) {
	client := fake.NewClientset()
	var sent authnv1.TokenReviewSpec
	client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		sent = tr.Spec
		tr.Status = authnv1.TokenReviewStatus{Authenticated: tr.Spec.Token == "good", Audiences: []string{"nats"},
			User: authnv1.UserInfo{Username: "system:serviceaccount:shop:hn", Extra: map[string]authnv1.ExtraValue{podNameKey: {"hn-1"}}}}
		return true, tr, nil
	})
	k := KubeReviewer{Client: client.AuthenticationV1(), Audiences: []string{"nats"}}
	r, err := k.Review(context.Background(), "good")
	require.NoError(t, err)
	require.Equal(t, Review{Namespace: "shop", ServiceAccount: "hn", Pod: "hn-1"}, r)
	require.Equal(t, authnv1.TokenReviewSpec{Token: "good", Audiences: []string{"nats"}}, sent)
	_, err = k.Review(context.Background(), "bad")
	require.Error(t, err)
}
