package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

func TestNormalizeImage(t *testing.T) {
	tests := []struct {
		image, domain, path string
	}{
		{"nginx", "docker.io", "library/nginx"},
		{"nginx:1.27", "docker.io", "library/nginx"},
		{"nginx@sha256:abc", "docker.io", "library/nginx"},
		{"nginx:1.27@sha256:abc", "docker.io", "library/nginx"},
		{"library/alpine:3", "docker.io", "library/alpine"},
		{"bitnami/postgresql:16", "docker.io", "bitnami/postgresql"},
		{"docker.io/nginx", "docker.io", "library/nginx"},
		{"docker.io/fluent/fluent-bit:3", "docker.io", "fluent/fluent-bit"},
		{"index.docker.io/library/nginx", "docker.io", "library/nginx"},
		{"localhost/app", "localhost", "app"},
		{"localhost:5000/x", "localhost:5000", "x"},
		{"localhost:5000/dev/api:1.2.3", "localhost:5000", "dev/api"},
		{"localhost:5000", "docker.io", "library/localhost"}, // one component: Docker Hub, tag 5000
		{"example.com", "docker.io", "library/example.com"},
		{"GHCR.IO/acme/app:v1", "ghcr.io", "acme/app"},
		{"Registry-9.Internal:5000/app@sha256:abc", "registry-9.internal:5000", "app"},
		{"ghcr.io/acme/app", "ghcr.io", "acme/app"},
		{"[::1]:5000/app:v1", "[::1]:5000", "app"},
	}
	for _, tt := range tests {
		d, p := normalizeImage(tt.image)
		if d != tt.domain || p != tt.path {
			t.Errorf("normalizeImage(%q) = %q, %q; want %q, %q", tt.image, d, p, tt.domain, tt.path)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, image string
		want           bool
	}{
		{"docker.io/library/nginx", "nginx:1.27", true},
		{"docker.io/library", "nginx", true},
		{"docker.io/bitnami", "bitnami/postgresql", true},
		{"docker.io", "redis", true},
		{"docker.io/library/nginx", "nginx-extra", false},
		{"localhost:5000", "localhost:5000/x", true},
		{"localhost:5000", "localhost/x", false},      // ports must match: absent vs 5000
		{"localhost", "localhost:5000/x", false},      // ... and the other way round
		{"localhost:5000", "localhost:5001/x", false}, // ... and equal digits
		{"localhost:5000", "localhost:5000", false},   // that is Docker Hub's library/localhost
		{"registry-9.internal:5000", "REGISTRY-9.Internal:5000/app:v1", true},
		{"Ghcr.IO/acme", "ghcr.io/acme/app", true},
		{"ghcr.io/acme", "GHCR.io/acme/app", true},
		{"ghcr.io/acme", "ghcr.io/acme", true},
		{"ghcr.io/acme/", "ghcr.io/acme/app", true},
		{"ghcr.io/acme", "ghcr.io/acme/team/app@sha256:abc", true},
		{"ghcr.io/acme", "ghcr.io/acme-other/x", false}, // path boundary
		{"ghcr.io/acme", "ghcr.io/ac", false},
		{"ghcr.io/acme/app", "ghcr.io/acme/app:v1", true},
		{"ghcr.io/acme/app", "ghcr.io/acme/apps", false},
		{"ghcr.io", "ghcr.io.evil.com/acme/x", false},
		{"*.icr.io", "us.icr.io/ns/app", true},
		{"*.icr.io", "US.ICR.IO/ns/app", true},
		{"*.icr.io", "icr.io/ns/app", false},        // one label more, not zero
		{"*.icr.io", "a.b.icr.io/ns/app", false},    // ... nor two
		{"*.icr.io", "us.icr.io:443/ns/app", false}, // ports must match
		{"*.icr.io:443", "us.icr.io:443/ns/app", true},
		{"*.icr.io:443", "us.icr.io/ns/app", false},
		{"*.icr.io/ns", "de.icr.io/ns/app", true},
		{"*.icr.io/ns", "de.icr.io/nsx/app", false},
		{"*.eu.tenant-3.example.org", "x.eu.tenant-3.example.org/app", true},
		{"*.eu.tenant-3.example.org", "eu.tenant-3.example.org/app", false},
		{"*.io", "docker.io/library/nginx", true},
		{"*.io", "nginx", true}, // docker.io
	}
	for _, tt := range tests {
		m, err := newMatcher([]configEntry{{Match: []string{tt.pattern}, Secret: "s"}})
		if err != nil {
			t.Fatalf("pattern %q: %v", tt.pattern, err)
		}
		got := len(m.match(tt.image, nil)) == 1
		if got != tt.want {
			t.Errorf("pattern %q, image %q: matched %v, want %v", tt.pattern, tt.image, got, tt.want)
		}
	}
}

func TestMatchOrderAndIndex(t *testing.T) {
	m, err := newMatcher([]configEntry{
		{Match: []string{"*.icr.io"}, Secret: "wild"},
		{Match: []string{"us.icr.io/ns", "us.icr.io"}, Secret: "exact-twice"},
		{Match: []string{"ghcr.io/acme"}, Secret: "acme"},
		{Match: []string{"us.icr.io/other"}, Secret: "other"},
		{Match: []string{"*.icr.io/ns/app"}, Secret: "wild-path"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.match("us.icr.io/ns/app:v1", nil), []int{0, 1, 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("match = %v, want %v (config order, each entry once)", got, want)
	}
	if got := m.match("", nil); len(got) != 0 {
		t.Errorf("empty image matched %v", got)
	}
}

func TestBadPatterns(t *testing.T) {
	for _, p := range []string{"", "/path", "foo*.icr.io", "*icr.io", "*.", "a.*.icr.io", "*.*.io", "host:port", "host:", "ghcr.io/a*"} {
		if _, _, err := parsePattern(p); err == nil {
			t.Errorf("pattern %q accepted", p)
		}
	}
}

const testConfig = `{"entries": [
  {"match": ["ghcr.io/acme", "*.icr.io"], "secret": "acme-pull", "alwaysPull": false},
  {"match": ["localhost:5000", "registry-9.internal:5000"], "secret": "local-pull", "alwaysPull": true},
  {"match": ["us.icr.io"], "secret": "existing", "alwaysPull": false}
]}`

const testReview = `{
  "apiVersion": "admission.k8s.io/v1",
  "kind": "AdmissionReview",
  "request": {
    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
    "kind": {"group": "", "version": "v1", "kind": "Pod"},
    "resource": {"group": "", "version": "v1", "resource": "pods"},
    "namespace": "team-payments",
    "operation": "CREATE",
    "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
    "object": {
      "apiVersion": "v1",
      "kind": "Pod",
      "metadata": {"generateName": "svc-1-", "namespace": "team-payments"},
      "spec": {
        "initContainers": [{"name": "init", "image": "us.icr.io/ns/migrate:1", "imagePullPolicy": "IfNotPresent"}],
        "containers": [
          {"name": "app", "image": "localhost:5000/dev/api:1.2.3", "imagePullPolicy": "IfNotPresent"},
          {"name": "side", "image": "REGISTRY-9.internal:5000/side", "imagePullPolicy": "Always"},
          {"name": "hub", "image": "nginx:1.27"},
          {"name": "acme", "image": "ghcr.io/acme/web@sha256:0123"}
        ],
        "imagePullSecrets": [{"name": "existing"}]
      }
    }
  }
}`

func newTestWebhook(t *testing.T) *webhook {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "peer-config.json")
	if err := os.WriteFile(path, []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return &webhook{m: m}
}

// checkResponse decodes a /mutate response and compares its patch with the one
// testReview must get.
func checkResponse(t *testing.T, contentType string, body []byte) {
	t.Helper()
	if contentType != "application/json" {
		t.Errorf("Content-Type %q", contentType)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("response %s: %v", body, err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
		t.Errorf("TypeMeta %+v", out.TypeMeta)
	}
	r := out.Response
	if r == nil || r.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" || !r.Allowed {
		t.Fatalf("response %+v", r)
	}
	if r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Errorf("patchType %v", r.PatchType)
	}
	if !bytes.Contains(body, []byte(`"patch":"W3`)) {
		t.Errorf("patch is not base64 in %s", body)
	}
	var ops []map[string]any
	if err := json.Unmarshal(r.Patch, &ops); err != nil {
		t.Fatalf("patch %s: %v", r.Patch, err)
	}
	want := []map[string]any{
		// localhost:5000 is alwaysPull; REGISTRY-9 is too but is Always already.
		{"op": "add", "path": "/spec/containers/0/imagePullPolicy", "value": "Always"},
		// us.icr.io matched *.icr.io (acme-pull) and us.icr.io ("existing", kept once).
		{"op": "add", "path": "/spec/imagePullSecrets/-", "value": map[string]any{"name": "acme-pull"}},
		{"op": "add", "path": "/spec/imagePullSecrets/-", "value": map[string]any{"name": "local-pull"}},
	}
	if !reflect.DeepEqual(ops, want) {
		t.Errorf("patch\n got %s\nwant %v", r.Patch, want)
	}
}

func TestHandler(t *testing.T) {
	h := newTestWebhook(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(testReview)))
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
	}
	checkResponse(t, rec.Header().Get("Content-Type"), rec.Body.Bytes())
}

func TestHandlerWholeArrayAndNoPatch(t *testing.T) {
	h := newTestWebhook(t)
	review := func(spec string) []byte {
		return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",` +
			`"object":{"apiVersion":"v1","kind":"Pod","spec":` + spec + `}}}`)
	}
	post := func(body []byte) admissionv1.AdmissionResponse {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("response %s: %v", rec.Body, err)
		}
		return *out.Response
	}

	r := post(review(`{"imagePullSecrets":[],"containers":[{"name":"a","image":"ghcr.io/acme/x"},` +
		`{"name":"b","image":"de.icr.io/y"},{"name":"c","image":"localhost:5000/z","imagePullPolicy":"Always"}],` +
		`"ephemeralContainers":[{"name":"d","image":"registry-9.internal:5000/dbg"}]}`))
	want := `[{"op":"add","path":"/spec/ephemeralContainers/0/imagePullPolicy","value":"Always"},` +
		`{"op":"add","path":"/spec/imagePullSecrets","value":[{"name":"acme-pull"},{"name":"local-pull"}]}]`
	if string(r.Patch) != want || r.UID != "u1" || !r.Allowed {
		t.Errorf("patch %s, want %s", r.Patch, want)
	}

	r = post(review(`{"containers":[{"name":"a","image":"nginx"},{"name":"b","image":"ghcr.io/acme-other/x"}]}`))
	if r.Patch != nil || r.PatchType != nil || !r.Allowed || r.UID != "u1" {
		t.Errorf("no match should be allowed without a patch, got %+v", r)
	}
}

func TestHandlerErrors(t *testing.T) {
	h := newTestWebhook(t)
	for _, tt := range []struct {
		method, path, body string
		code               int
	}{
		{http.MethodGet, "/mutate", "", http.StatusNotFound},
		{http.MethodPost, "/other", testReview, http.StatusNotFound},
		{http.MethodPost, "/mutate", "{not json", http.StatusBadRequest},
		{http.MethodPost, "/mutate", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{http.MethodPost, "/mutate", `{"request":{"uid":"u"}}`, http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
		if rec.Code != tt.code {
			t.Errorf("%s %s %q: HTTP %d, want %d", tt.method, tt.path, tt.body, rec.Code, tt.code)
		}
	}
}

// TestServe runs the process protocol: PORT line, HTTPS with HTTP/2 by ALPN, and a
// clean stop when stdin closes.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	certPEM := writeCert(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "peer-config.json"), []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- serve(dir, stdinR, stdoutW) }()

	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "PORT ") {
		t.Fatalf("first line %q, %v", line, err)
	}
	port := strings.TrimSpace(strings.TrimPrefix(line, "PORT "))

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	for _, h2 := range []bool{true, false} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := client.Post("https://localhost:"+port+"/mutate", "application/json", strings.NewReader(testReview))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
		}
		if wantProto := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != wantProto {
			t.Errorf("protocol %s, want HTTP/%d", resp.Proto, wantProto)
		}
		checkResponse(t, resp.Header.Get("Content-Type"), body)
		tr.CloseIdleConnections()
	}

	stdinW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not stop after stdin closed")
	}
}

// writeCert writes a self-signed certificate for localhost and its key to dir as
// tls.crt and tls.key and returns the certificate's PEM.
func writeCert(t *testing.T, dir string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}
