// Command kube-controller-manager is the upstream kube-controller-manager, built from the pinned
// k8s.io/kubernetes module for the confidential-pods e2e harness (tests/e2e): Deployments, Jobs and the
// garbage collector for the product installed on the e2e node. It mirrors
// k8s.io/kubernetes/cmd/kube-controller-manager/controller-manager.go of that release.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones, as upstream

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
