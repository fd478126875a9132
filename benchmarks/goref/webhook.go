package main

// The reference webhook of issue 13 (benchmarks/webhook_gap.py): what the apiserver's call of a mutating webhook
// costs when the webhook itself costs next to nothing. It decodes each AdmissionReview and its Pod with the
// upstream types and encoding/json, as a Go webhook does, and answers every review with one fixed JSON patch:
// the patch our webhook answers for the benchmark's pod, so that the apiserver applies the same bytes. It is
// a yardstick, not a policy: it computes nothing.
//
//	goref -webhook-patch patch.json -tls-cert tls.crt -tls-key tls.key -port 8889

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	v1 "k8s.io/api/core/v1"
)

// reviews is what the webhook answered: the time each review took, from its handler's start (before the
// body is read and decoded) to its answer written, in nanoseconds. GET /stats returns them and starts afresh.
type reviews struct {
	mu        sync.Mutex
	durations []int64
}

func (s *reviews) record(d time.Duration) {
	s.mu.Lock()
	s.durations = append(s.durations, d.Nanoseconds())
	s.mu.Unlock()
}

func (s *reviews) take() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	taken := s.durations
	s.durations = nil
	if taken == nil {
		taken = []int64{}
	}
	return taken
}

// mutate answers every AdmissionReview of a Pod with patch; 400 for a body that is not one.
func mutate(patch []byte, stats *reviews) http.HandlerFunc {
	patchType := admissionv1.PatchTypeJSONPatch
	return func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "body is not an AdmissionReview with a request", http.StatusBadRequest)
			return
		}
		var pod v1.Pod
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
			http.Error(w, "the review's object is not a Pod", http.StatusBadRequest)
			return
		}
		answer := admissionv1.AdmissionReview{
			TypeMeta: review.TypeMeta,
			Response: &admissionv1.AdmissionResponse{
				UID: review.Request.UID, Allowed: true, Patch: patch, PatchType: &patchType,
			},
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(&answer); err != nil {
			log.Printf("writing the answer: %v", err)
		}
		stats.record(time.Since(started))
	}
}

func serveWebhook(patchFile, cert, key, address string) {
	patch, err := os.ReadFile(patchFile)
	if err != nil {
		log.Fatalf("-webhook-patch: %v", err)
	}
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		log.Fatalf("-webhook-patch: not a JSON patch: %v", err)
	}
	stats := &reviews{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", mutate(patch, stats))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(map[string][]int64{"durations_ns": stats.take()}); err != nil {
			log.Printf("writing the stats: %v", err)
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	log.Printf("goref webhook: a patch of %d operations, serving on https://%s", len(ops), address)
	log.Fatal(http.ListenAndServeTLS(address, cert, key, mux))
}
