// Package defaults gives a configuration's unset numbers their default, the
// one rule every package's New follows (strings and pointers use cmp.Or).
package defaults

// Positive sets *v to def unless *v is above zero: zero is unset, and a
// negative size, count or duration means nothing either.
func Positive[T ~int | ~int64 | ~float64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
