//go:build tools

// Package tools records the Kubernetes commands this module builds, so that
// `go mod tidy` keeps every module they need in go.mod and go.sum: the control
// plane (tests/controlplane/build.sh) and the real node's kubelet, kube-proxy and
// kube-scheduler (tests/node/build.sh), all from one pinned release.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
