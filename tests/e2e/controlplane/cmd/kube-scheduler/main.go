// Command kube-scheduler is the upstream kube-scheduler, built from the pinned
// k8s.io/kubernetes module for the confidential-pods e2e harness (tests/e2e).
// It mirrors k8s.io/kubernetes/cmd/kube-scheduler/scheduler.go of that release.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
