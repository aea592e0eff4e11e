package sets

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSizes(t *testing.T) {
	m := map[string]map[int]struct{}{"a": {1: {}, 2: {}}, "b": {}}
	assert.Equal(t, map[string]int{"a": 2, "b": 0}, Sizes(m))
	assert.Empty(t, Sizes(map[string]map[int]struct{}(nil)))
}
