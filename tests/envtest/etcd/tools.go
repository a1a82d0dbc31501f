//go:build tools

// Package tools pins the command install.sh builds (etcd's server main package), so
// `go mod tidy` keeps its dependencies in go.mod and go.sum.
package tools

import _ "go.etcd.io/etcd/server/v3"
