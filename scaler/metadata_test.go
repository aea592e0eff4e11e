package scaler

import (
	"context"
	"testing"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/headcount-dev/headcount/internal/natstest"
)

func TestMetadataErrorsAreInvalidArgument(t *testing.T) {
	_, addr, _ := serve(t, natstest.Server(t), ServerConfig{})
	c, _ := dial(t, addr)
	cases := []struct {
		name  string
		md    map[string]string
		field string
	}{
		{"no metadata", nil, KeyService},
		{"no service", map[string]string{KeyTarget: "100"}, KeyService},
		{"uppercase service", map[string]string{KeyService: "HackerNews", KeyTarget: "100"}, KeyService},
		{"service with a dot", map[string]string{KeyService: "a.b", KeyTarget: "100"}, KeyService},
		{"service wildcard", map[string]string{KeyService: "*", KeyTarget: "100"}, KeyService},
		{"no target", map[string]string{KeyService: "hn"}, KeyTarget},
		{"empty target", map[string]string{KeyService: "hn", KeyTarget: ""}, KeyTarget},
		{"word target", map[string]string{KeyService: "hn", KeyTarget: "lots"}, KeyTarget},
		{"zero target", map[string]string{KeyService: "hn", KeyTarget: "0"}, KeyTarget},
		{"negative target", map[string]string{KeyService: "hn", KeyTarget: "-5"}, KeyTarget},
		{"NaN target", map[string]string{KeyService: "hn", KeyTarget: "NaN"}, KeyTarget},
		{"infinite target", map[string]string{KeyService: "hn", KeyTarget: "+Inf"}, KeyTarget},
		{"huge target", map[string]string{KeyService: "hn", KeyTarget: "1e12"}, KeyTarget},
		{"word activation", map[string]string{KeyService: "hn", KeyTarget: "100", KeyActivation: "some"}, KeyActivation},
		{"negative activation", map[string]string{KeyService: "hn", KeyTarget: "100", KeyActivation: "-1"}, KeyActivation},
		{"NaN activation", map[string]string{KeyService: "hn", KeyTarget: "100", KeyActivation: "NaN"}, KeyActivation},
		{"infinite activation", map[string]string{KeyService: "hn", KeyTarget: "100", KeyActivation: "Inf"}, KeyActivation},
		{"unknown metric", map[string]string{KeyService: "hn", KeyTarget: "100", KeyMetric: "cpu"}, KeyMetric},
		{"metric in capitals", map[string]string{KeyService: "hn", KeyTarget: "100", KeyMetric: "Graphs"}, KeyMetric},
	}
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &externalscaler.ScaledObjectRef{Name: "so", Namespace: "default", ScalerMetadata: tc.md}
			_, specErr := c.GetMetricSpec(ctx, r)
			_, metricsErr := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: r})
			_, activeErr := c.IsActive(ctx, r)
			stream, err := c.StreamIsActive(ctx, r)
			require.NoError(t, err)
			_, streamErr := stream.Recv()
			for rpc, err := range map[string]error{"GetMetricSpec": specErr, "GetMetrics": metricsErr, "IsActive": activeErr, "StreamIsActive": streamErr} {
				st, ok := status.FromError(err)
				require.True(t, ok, "%s: %v", rpc, err)
				assert.Equal(t, codes.InvalidArgument, st.Code(), rpc)
				assert.Contains(t, st.Message(), "metadata "+tc.field+"=", rpc)
				assert.Contains(t, st.Message(), "want ", rpc)
			}
		})
	}
}

func TestMetadataAccepted(t *testing.T) {
	for _, md := range []map[string]string{
		{KeyService: "hn", KeyTarget: "100"},
		{KeyService: "hn", KeyTarget: "0.5", KeyActivation: "0"},
		{KeyService: "hn", KeyTarget: "1e3", KeyActivation: "2.5", "scalerAddress": "x:9090", "unknownKey": "kept for newer versions"},
		{KeyService: "hn", KeyTarget: "100", KeyMetric: "instances"},
		{KeyService: "hn", KeyTarget: "20", KeyMetric: "graphs"},
		{KeyService: "hn", KeyTarget: "30", KeyMetric: "cost"},
	} {
		_, err := parseMetadata(md)
		assert.NoError(t, err, "%v", md)
	}
}
