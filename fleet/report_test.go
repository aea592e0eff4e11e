package fleet

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func validReport() Report {
	return Report{
		V: Version, Service: "hackernews", Follower: "follower-3", Incarnation: "2f1c",
		Role: RoleFollower, State: StateReady, Control: "10.0.3.7:8081", Streaming: "10.0.3.7:8080",
		Instances: 42, Created: 977, Capacity: 500, Seq: 1234, TTLMillis: 3000,
		Pod: "hn-follower-7d9f-abcde", Namespace: "default",
	}
}

func TestDecodeReportAcceptsTheDesignExample(t *testing.T) {
	body := `{"v":1,"service":"hackernews","follower":"follower-3","incarnation":"2f1c…",
 "role":"follower","state":"ready","control":"10.0.3.7:8081","streaming":"10.0.3.7:8080",
 "instances":42,"created":977,"capacity":500,"seq":1234,"ttl_ms":3000,
 "pod":"hn-follower-7d9f-abcde","namespace":"default"}`
	// The design's "…" stands for the rest of a UUID; ours are ASCII.
	body = strings.Replace(body, "2f1c…", "2f1c", 1)
	r, err := DecodeReport([]byte(body), "hackernews", "follower-3", AddressPolicy{})
	require.NoError(t, err)
	require.Equal(t, validReport(), r)
}

func TestDecodeReportAcceptsUnknownFieldsAndHostnames(t *testing.T) {
	r := validReport()
	r.Control, r.Streaming = "follower-3.hn.svc.cluster.local:8081", "[::1]:8080"
	data, _ := json.Marshal(r)
	data = append(data[:len(data)-1], []byte(`,"zone":"eu-west-1a"}`)...)
	_, err := DecodeReport(data, "hackernews", "follower-3", AddressPolicy{})
	require.NoError(t, err)
}

// malformedReports is the table of bad messages a view must drop; the watcher
// test publishes every one of them over NATS too.
type malformedCase struct {
	Name, Follower, Reason string
	Body                   []byte
}

func malformedReports() []malformedCase {
	mutate := func(f func(m map[string]any)) []byte {
		data, _ := json.Marshal(validReport())
		var m map[string]any
		_ = json.Unmarshal(data, &m)
		f(m)
		out, _ := json.Marshal(m)
		return out
	}
	set := func(k string, v any) []byte { return mutate(func(m map[string]any) { m[k] = v }) }
	return []malformedCase{
		{"not JSON", "follower-3", ReasonJSON, []byte(`{"v":1,`)},
		{"JSON array", "follower-3", ReasonJSON, []byte(`[1,2,3]`)},
		{"trailing garbage", "follower-3", ReasonJSON, append(set("v", 1), []byte(" {}")...)},
		{"empty body", "follower-3", ReasonJSON, nil},
		{"null", "follower-3", ReasonVersion, []byte(`null`)},
		{"instances as string", "follower-3", ReasonJSON, set("instances", "42")},
		{"instances as float", "follower-3", ReasonJSON, set("instances", 4.5)},
		{"seq negative", "follower-3", ReasonJSON, set("seq", -1)},
		{"unknown version", "follower-3", ReasonVersion, set("v", 2)},
		{"negative instances", "follower-3", ReasonCount, set("instances", -1)},
		{"absurd instances", "follower-3", ReasonCount, set("instances", MaxInstances+1)},
		{"negative created", "follower-3", ReasonCount, set("created", -5)},
		{"negative capacity", "follower-3", ReasonCount, set("capacity", -5)},
		{"negative graphs", "follower-3", ReasonCount, set("graphs", -1)},
		{"more graphs than instances", "follower-3", ReasonCount, set("graphs", 43)},
		{"subject names another follower", "follower-4", ReasonSubject, set("v", 1)},
		{"body names another service", "follower-3", ReasonSubject, set("service", "other")},
		{"uppercase follower", "Follower-3", ReasonName, set("follower", "Follower-3")},
		{"empty incarnation", "follower-3", ReasonName, set("incarnation", "")},
		{"unknown state", "follower-3", ReasonState, set("state", "sleeping")},
		{"unknown role", "follower-3", ReasonRole, set("role", "boss")},
		{"address without port", "follower-3", ReasonAddress, set("control", "10.0.3.7")},
		{"address with bad port", "follower-3", ReasonAddress, set("streaming", "10.0.3.7:99999")},
		{"address with bad host", "follower-3", ReasonAddress, set("control", "exa mple:80")},
		{"ttl too short", "follower-3", ReasonTTL, set("ttl_ms", 1)},
		{"ttl missing", "follower-3", ReasonTTL, mutate(func(m map[string]any) { delete(m, "ttl_ms") })},
		// Just under NATS's default 1 MiB max payload, so it can travel.
		{"1 MiB body", "follower-3", ReasonOversize, set("pod", strings.Repeat("a", 1<<20-1024))},
	}
}

func TestDecodeReportReadsGraphs(t *testing.T) {
	r := validReport()
	r.Graphs = r.Instances // every instance its own definition: the most there can be
	data, err := json.Marshal(r)
	require.NoError(t, err)
	require.Contains(t, string(data), `"graphs":42`)
	got, err := DecodeReport(data, "hackernews", "follower-3", AddressPolicy{})
	require.NoError(t, err)
	require.Equal(t, int64(42), got.Graphs)
	// An agent that does not count definitions sends no field: 0.
	r.Graphs = 0
	data, _ = json.Marshal(r)
	require.NotContains(t, string(data), "graphs")
}

func TestDecodeReportRejectsMalformed(t *testing.T) {
	for _, tc := range malformedReports() {
		t.Run(tc.Name, func(t *testing.T) {
			_, err := DecodeReport(tc.Body, "hackernews", tc.Follower, AddressPolicy{})
			require.Error(t, err)
			require.Equal(t, tc.Reason, ReasonOf(err), "error: %v", err)
		})
	}
}

func TestAddressPolicyAllowsOnlyItsCIDRs(t *testing.T) {
	allowed, err := ParseCIDRs([]string{"10.0.0.0/8", "::1/128"})
	require.NoError(t, err)
	policy := AddressPolicy{Allowed: allowed}
	for addr, ok := range map[string]bool{
		"10.0.3.7:8081":             true,
		"[::1]:8081":                true,
		"[::ffff:10.1.2.3]:8081":    true,
		"192.168.1.1:8081":          false,
		"follower.example.com:8081": false, // names could resolve anywhere
	} {
		r := validReport()
		r.Control = addr
		err := r.Validate(policy)
		if ok {
			require.NoError(t, err, addr)
		} else {
			require.Equal(t, ReasonForbidden, ReasonOf(err), addr)
		}
	}
	_, err = ParseCIDRs([]string{"10.0.0.0/33"})
	require.Error(t, err)
}

func TestGoneNeedsNoAddresses(t *testing.T) {
	r := validReport()
	r.State, r.Control, r.Streaming = StateGone, "", ""
	require.NoError(t, r.Validate(AddressPolicy{}))
}

func TestDecodePlacedAndDemand(t *testing.T) {
	p, err := DecodePlaced([]byte(`{"router":"r-1","follower":"follower-3","incarnation":"2f1c","n":1}`), "follower-3")
	require.NoError(t, err)
	require.Equal(t, Placed{Router: "r-1", Follower: "follower-3", Incarnation: "2f1c", N: 1}, p)
	for body, reason := range map[string]string{
		`{"router":"r-1","follower":"follower-4","incarnation":"2f1c","n":1}`: ReasonSubject,
		`{"router":"R 1","follower":"follower-3","incarnation":"2f1c","n":1}`: ReasonName,
		`{"router":"r-1","follower":"follower-3","incarnation":"2f1c","n":0}`: ReasonCount,
		`{"router":"r-1","follower":"follower-3","incarnation":"","n":1}`:     ReasonName,
	} {
		_, err := DecodePlaced([]byte(body), "follower-3")
		require.Equal(t, reason, ReasonOf(err), body)
	}

	d, err := DecodeDemand([]byte(`{"router":"r-1","pending":5,"ttl_ms":3000}`), "r-1")
	require.NoError(t, err)
	require.Equal(t, Demand{Router: "r-1", Pending: 5, TTLMillis: 3000}, d)
	for body, reason := range map[string]string{
		`{"router":"r-2","pending":5,"ttl_ms":3000}`:  ReasonSubject,
		`{"router":"r-1","pending":-1,"ttl_ms":3000}`: ReasonCount,
		`{"router":"r-1","pending":5}`:                ReasonTTL,
	} {
		_, err := DecodeDemand([]byte(body), "r-1")
		require.Equal(t, reason, ReasonOf(err), body)
	}
}

func TestSubjects(t *testing.T) {
	s, err := NewSubjects("hc.prod")
	require.NoError(t, err)
	require.Equal(t, "hc.prod.hn.report.follower-3", s.Report("hn", "follower-3"))
	require.Equal(t, "hc.prod.hn.placed.follower-3", s.Placed("hn", "follower-3"))
	require.Equal(t, "hc.prod.hn.demand.r-1", s.Demand("hn", "r-1"))
	require.Equal(t, "hc.prod.hn.rollcall", s.RollCall("hn"))
	require.Equal(t, "hc.prod.rollcall", s.RollCall(""))
	require.Equal(t, "hc.prod.*.*.*", s.Watch(""))

	service, kind, name, ok := s.Parse("hc.prod.hn.report.follower-3")
	require.True(t, ok)
	require.Equal(t, []string{"hn", "report", "follower-3"}, []string{service, kind, name})
	for _, bad := range []string{"hc.hn.report.x", "hc.prod.hn.report", "hc.prod.hn.report.a.b"} {
		_, _, _, ok := s.Parse(bad)
		require.False(t, ok, bad)
	}
	for _, bad := range []string{"", "a..b", "a.*", "a.>", "a b"} {
		_, err := NewSubjects(bad)
		require.Error(t, err, bad)
	}
}

func FuzzDecodeReport(f *testing.F) {
	good, _ := json.Marshal(validReport())
	f.Add(good, "hackernews", "follower-3")
	for _, tc := range malformedReports() {
		if len(tc.Body) < 4096 {
			f.Add(tc.Body, "hackernews", tc.Follower)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, service, follower string) {
		r, err := DecodeReport(data, service, follower, AddressPolicy{})
		if err != nil {
			if ReasonOf(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		// Whatever is accepted must be valid, agree with the subject, and
		// apply to a view without breaking its totals.
		require.NoError(t, r.Validate(AddressPolicy{}))
		require.Equal(t, service, r.Service)
		require.Equal(t, follower, r.Follower)
		v := NewView()
		v.Apply(r, testNow)
		tot := v.Totals(service)
		require.GreaterOrEqual(t, tot.Instances, int64(0))
		require.LessOrEqual(t, tot.Ready+tot.Draining+tot.Starting+tot.Leaders, 1)
	})
}
