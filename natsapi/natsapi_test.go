package natsapi

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
)

func TestEndpointSubjectsNeverReachAWatcher(t *testing.T) {
	s := fleet.Subjects{Prefix: "hc.prod"}
	require.Equal(t, "hc.prod.demo.api.scaler.status", Subject(s, "demo", Scaler, "status"))
	require.Equal(t, "hc.prod.demo.api.member.follower-1.report", MemberSubject(s, "demo", "follower-1", "report"))
	for _, subj := range []string{Subject(s, "demo", Scaler, "status"), MemberSubject(s, "demo", "f", "report")} {
		_, _, _, ok := s.Parse(subj)
		require.False(t, ok, "%s has the shape of a watched subject", subj)
		svc, ok := ServiceOf(s, subj)
		require.True(t, ok)
		require.Equal(t, "demo", svc)
	}
	_, ok := ServiceOf(s, "hc.prod.*.api.scaler.status")
	require.False(t, ok, "a wildcard is no service")
	_, ok = ServiceOf(s, "other.demo.api.scaler.status")
	require.False(t, ok)
}
