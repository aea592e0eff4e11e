//go:build tools

// Package tools pins xk6, the k6 builder: the module proxy here serves only
// v0.20.1, so it is required from this small module instead of the main one.
package tools

import _ "go.k6.io/xk6/cmd/xk6"
