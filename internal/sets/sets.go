// Package sets holds what the components' sets of sets (streams by
// follower, subscribers by service) share.
package sets

// Sizes counts the members of each set in m.
func Sizes[K, E comparable](m map[K]map[E]struct{}) map[K]int {
	out := make(map[K]int, len(m))
	for k, set := range m {
		out[k] = len(set)
	}
	return out
}
