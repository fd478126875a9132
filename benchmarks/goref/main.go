// Command goref is the reference extender of issue 13: the /filter and /prioritize verbs of
// confidential-pods' extender, written the way Go scheduler extenders are (gpushare, Intel TAS/GAS):
// net/http, encoding/json, the upstream types of k8s.io/kube-scheduler/extender/v1 and k8s.io/api/core/v1,
// the pod's requests from k8s.io/component-helpers/resource (KEP-753) and a ledger behind a sync.RWMutex.
//
// With -webhook-patch it is the reference webhook instead (webhook.go).
//
// It serves one snapshot (a v1 List of Nodes and Pods as JSON, the file `extender serve --snapshot` reads)
// and answers what our extender answers over it, message for message (tests/extender/test_goref.py checks
// that on the same snapshot), so that benchmarks/extender_bench.py can report our per-call latency and CPU
// as a ratio to it. It is a yardstick, not a product: no watch, no bind, no reservations, no preemption.
//
//	goref --snapshot cluster.json --port 8888 --resource alibabacloud.com/sgx_epc_MiB --unit 1048576
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// usage is one node's EPC accounting in bytes; hasEPC is false for a node that advertises none.
type usage struct {
	hasEPC   bool
	capacity int64
	used     int64
}

type ledger struct {
	mu       sync.RWMutex
	nodes    map[string]usage
	resource v1.ResourceName
	unit     int64
	most     bool // MostAllocated scoring, else LeastAllocated
}

// amount is a quantity of the EPC resource in bytes.
func (l *ledger) amount(q resource.Quantity) int64 {
	return q.Value() * l.unit
}

// podEPC is the pod's effective EPC request in bytes: containers and native sidecars summed, regular init
// containers by their maximum, plus overhead; a container that sets only a limit gets it as its request,
// as the apiserver's defaulting does.
func (l *ledger) podEPC(pod *v1.Pod) int64 {
	defaultRequests := func(containers []v1.Container) {
		for i := range containers {
			resources := &containers[i].Resources
			if limit, ok := resources.Limits[l.resource]; ok {
				if _, set := resources.Requests[l.resource]; !set {
					if resources.Requests == nil {
						resources.Requests = v1.ResourceList{}
					}
					resources.Requests[l.resource] = limit
				}
			}
		}
	}
	defaultRequests(pod.Spec.Containers)
	defaultRequests(pod.Spec.InitContainers)
	requests := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	if q, ok := requests[l.resource]; ok {
		return l.amount(q)
	}
	return 0
}

func (l *ledger) load(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var pods []*v1.Pod
	for _, item := range list.Items {
		var kind struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(item, &kind); err != nil {
			return err
		}
		switch kind.Kind {
		case "Node":
			var node v1.Node
			if err := json.Unmarshal(item, &node); err != nil {
				return err
			}
			u := usage{}
			if q, ok := node.Status.Allocatable[l.resource]; ok {
				u = usage{hasEPC: true, capacity: l.amount(q)}
			}
			l.nodes[node.Name] = u
		case "Pod":
			pod := &v1.Pod{}
			if err := json.Unmarshal(item, pod); err != nil {
				return err
			}
			pods = append(pods, pod)
		}
	}
	for _, pod := range pods {
		phase := pod.Status.Phase
		if pod.Spec.NodeName == "" || phase == v1.PodSucceeded || phase == v1.PodFailed {
			continue
		}
		if u, ok := l.nodes[pod.Spec.NodeName]; ok {
			u.used += l.podEPC(pod)
			l.nodes[pod.Spec.NodeName] = u
		}
	}
	return nil
}

var suffixes = []struct {
	name string
	size int64
}{{"Ei", 1 << 60}, {"Pi", 1 << 50}, {"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}}

// formatBytes writes bytes as users write EPC (64Mi, 1536Ki), the extender's own format_bytes.
func formatBytes(amount int64) string {
	if amount == 0 {
		return "0"
	}
	for _, s := range suffixes {
		if amount%s.size == 0 {
			return strconv.FormatInt(amount/s.size, 10) + s.name
		}
	}
	return strconv.FormatInt(amount, 10)
}

// unfit says why a pod needing epc bytes does not fit on a node, and whether no eviction could help.
func (l *ledger) unfit(epc int64, u usage, known bool) (string, bool) {
	switch {
	case !known:
		return "node is not in the extender's EPC ledger (not listed or watched yet)", true
	case !u.hasEPC:
		return fmt.Sprintf("node has no SGX EPC (%s)", l.resource), true
	case epc > u.capacity:
		return fmt.Sprintf("insufficient SGX EPC: pod requests %s, node has only %s in total",
			formatBytes(epc), formatBytes(u.capacity)), true
	}
	return fmt.Sprintf("insufficient SGX EPC: pod requests %s, node has %s free of %s",
		formatBytes(epc), formatBytes(max(u.capacity-u.used, 0)), formatBytes(u.capacity)), false
}

func (l *ledger) filter(args *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
	names := []string{}
	if args.NodeNames != nil {
		names = *args.NodeNames
	}
	epc := l.podEPC(args.Pod)
	if epc <= 0 {
		return &extenderv1.ExtenderFilterResult{NodeNames: &names}
	}
	passed := make([]string, 0, len(names))
	failed := extenderv1.FailedNodesMap{}
	unresolvable := extenderv1.FailedNodesMap{}
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, name := range names {
		u, known := l.nodes[name]
		if known && u.hasEPC && u.capacity-u.used >= epc {
			passed = append(passed, name)
			continue
		}
		reason, final := l.unfit(epc, u, known)
		if final {
			unresolvable[name] = reason
		} else {
			failed[name] = reason
		}
	}
	return &extenderv1.ExtenderFilterResult{
		NodeNames: &passed, FailedNodes: failed, FailedAndUnresolvableNodes: unresolvable,
	}
}

func (l *ledger) prioritize(args *extenderv1.ExtenderArgs) *extenderv1.HostPriorityList {
	names := []string{}
	if args.NodeNames != nil {
		names = *args.NodeNames
	}
	epc := l.podEPC(args.Pod)
	scores := make(extenderv1.HostPriorityList, len(names))
	l.mu.RLock()
	defer l.mu.RUnlock()
	for i, name := range names {
		scores[i] = extenderv1.HostPriority{Host: name, Score: extenderv1.MinExtenderPriority}
		u, known := l.nodes[name]
		free := u.capacity - u.used
		if epc <= 0 || !known || !u.hasEPC || u.capacity == 0 || free < epc {
			continue
		}
		if l.most {
			scores[i].Score = (u.capacity - free + epc) * extenderv1.MaxExtenderPriority / u.capacity
		} else {
			scores[i].Score = (free - epc) * extenderv1.MaxExtenderPriority / u.capacity
		}
	}
	return &scores
}

// verb decodes ExtenderArgs, answers with answer's result as JSON, or 400 for a body that is not one.
func verb[T any](answer func(*extenderv1.ExtenderArgs) *T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var args extenderv1.ExtenderArgs
		if err := json.NewDecoder(r.Body).Decode(&args); err != nil || args.Pod == nil {
			http.Error(w, "body is not ExtenderArgs with a Pod", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(answer(&args)); err != nil {
			log.Printf("writing the answer: %v", err)
		}
	}
}

func main() {
	snapshot := flag.String("snapshot", "", "a v1 List of Nodes and Pods, JSON")
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8888, "port to listen on")
	resourceName := flag.String("resource", "alibabacloud.com/sgx_epc_MiB", "the EPC extended resource")
	unit := flag.Int64("unit", 1<<20, "bytes per unit of --resource (1 for a byte quantity)")
	strategy := flag.String("strategy", "LeastAllocated", "LeastAllocated or MostAllocated")
	webhookPatch := flag.String("webhook-patch", "", "serve the reference webhook (webhook.go) with this JSON patch")
	tlsCert := flag.String("tls-cert", "", "the reference webhook's certificate (PEM)")
	tlsKey := flag.String("tls-key", "", "the reference webhook's key (PEM)")
	flag.Parse()
	if *webhookPatch != "" {
		serveWebhook(*webhookPatch, *tlsCert, *tlsKey, net.JoinHostPort(*host, strconv.Itoa(*port)))
		return
	}
	if *strategy != "LeastAllocated" && *strategy != "MostAllocated" {
		log.Fatalf("--strategy: %q is neither LeastAllocated nor MostAllocated", *strategy)
	}
	l := &ledger{nodes: map[string]usage{}, resource: v1.ResourceName(*resourceName), unit: *unit,
		most: *strategy == "MostAllocated"}
	if err := l.load(*snapshot); err != nil {
		log.Fatalf("--snapshot: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /filter", verb(l.filter))
	mux.HandleFunc("POST /prioritize", verb(l.prioritize))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	address := net.JoinHostPort(*host, strconv.Itoa(*port))
	log.Printf("goref: %d nodes from %s, serving on http://%s", len(l.nodes), *snapshot, address)
	log.Fatal(http.ListenAndServe(address, mux))
}
