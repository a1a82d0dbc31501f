// Command go-peer is the Go peer for benches/loadgen.rs: a mutating admission webhook
// that injects imagePullSecrets (and imagePullPolicy: Always) exactly like
// pullsecret-injector's /mutate, but written the way Go webhooks usually are:
// k8s.io/api types decoded and encoded with encoding/json, served by net/http over TLS
// (HTTP/2 by ALPN). It exists only so the load benchmark can compare CPU per review
// against a typical implementation; it is not part of the product.
//
// Usage: go-peer --serve DIR
//
// DIR holds tls.crt, tls.key and peer-config.json. The peer listens on 127.0.0.1:0,
// prints "PORT <n>", serves POST /mutate, and stops (exit 0) when stdin reaches EOF.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// maxBody bounds a review body (the API server sends at most about 3 MiB).
const maxBody = 8 << 20

func main() {
	if len(os.Args) != 3 || os.Args[1] != "--serve" {
		fmt.Fprintln(os.Stderr, "usage: go-peer --serve DIR")
		os.Exit(2)
	}
	if err := serve(os.Args[2], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "go-peer: %v\n", err)
		os.Exit(1)
	}
}

// serve runs the webhook until stdin reaches EOF, then shuts down gracefully.
func serve(dir string, stdin io.Reader, stdout io.Writer) error {
	m, err := loadConfig(filepath.Join(dir, "peer-config.json"))
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: &webhook{m: m},
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
	}
	if _, err := fmt.Fprintf(stdout, "PORT %d\n", ln.Addr().(*net.TCPAddr).Port); err != nil {
		ln.Close()
		return err
	}

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_, _ = io.Copy(io.Discard, stdin)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close() // connections still busy after the drain timeout
		}
	}()
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-stopped
	return nil
}

type webhook struct {
	m *matcher
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/mutate" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "the body is not an AdmissionReview", http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "the AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, "request.object is not a Pod", http.StatusBadRequest)
		return
	}

	resp := admissionv1.AdmissionReview{
		TypeMeta: review.TypeMeta,
		Response: &admissionv1.AdmissionResponse{
			UID:     review.Request.UID,
			Allowed: true,
		},
	}
	if ops := h.m.mutate(&pod); len(ops) > 0 {
		patch, err := json.Marshal(ops)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Response.PatchType = &pt
		resp.Response.Patch = patch
	}
	out, err := json.Marshal(resp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// mutate returns the JSON Patch for pod: imagePullPolicy: Always for every container
// whose image matched an alwaysPull entry (and is not Always already), then the
// matched entries' secrets that the Pod does not list yet.
func (m *matcher) mutate(pod *corev1.Pod) []patchOp {
	spec := &pod.Spec
	present := make(map[string]bool, len(spec.ImagePullSecrets))
	for _, s := range spec.ImagePullSecrets {
		present[s.Name] = true
	}
	var (
		ops     []patchOp
		secrets []string
		hits    []int
	)
	visit := func(list string, i int, image string, policy corev1.PullPolicy) {
		hits = m.match(image, hits[:0])
		always := false
		for _, e := range hits {
			entry := &m.entries[e]
			always = always || entry.AlwaysPull
			if !present[entry.Secret] {
				present[entry.Secret] = true
				secrets = append(secrets, entry.Secret)
			}
		}
		if always && policy != corev1.PullAlways {
			ops = append(ops, patchOp{
				Op:    "add",
				Path:  "/spec/" + list + "/" + strconv.Itoa(i) + "/imagePullPolicy",
				Value: corev1.PullAlways,
			})
		}
	}
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		visit("initContainers", i, c.Image, c.ImagePullPolicy)
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		visit("containers", i, c.Image, c.ImagePullPolicy)
	}
	for i := range spec.EphemeralContainers {
		c := &spec.EphemeralContainers[i]
		visit("ephemeralContainers", i, c.Image, c.ImagePullPolicy)
	}

	if len(secrets) == 0 {
		return ops
	}
	if len(spec.ImagePullSecrets) == 0 {
		refs := make([]corev1.LocalObjectReference, len(secrets))
		for i, s := range secrets {
			refs[i].Name = s
		}
		return append(ops, patchOp{Op: "add", Path: "/spec/imagePullSecrets", Value: refs})
	}
	for _, s := range secrets {
		ops = append(ops, patchOp{
			Op:    "add",
			Path:  "/spec/imagePullSecrets/-",
			Value: corev1.LocalObjectReference{Name: s},
		})
	}
	return ops
}
