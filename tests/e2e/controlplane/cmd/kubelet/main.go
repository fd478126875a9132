// Command kubelet is the upstream kubelet, built from the pinned k8s.io/kubernetes
// module for the confidential-pods e2e node (tests/e2e/node.py). It mirrors
// k8s.io/kubernetes/cmd/kubelet/kubelet.go of that release.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	os.Exit(cli.Run(command))
}
