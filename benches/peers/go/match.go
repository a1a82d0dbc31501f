package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// peerConfig is peer-config.json: the registry entries the load generator also gives
// our webhook, without the features this peer does not implement.
type peerConfig struct {
	Entries []configEntry `json:"entries"`
}

type configEntry struct {
	Match      []string `json:"match"`
	Secret     string   `json:"secret"`
	AlwaysPull bool     `json:"alwaysPull"`
}

// rule is one pattern of one entry, filed under its lower-cased host[:port] key.
type rule struct {
	entry  int    // index into matcher.entries (config order)
	prefix string // path prefix without leading/trailing '/', "" for any path
}

// matcher indexes the patterns by host: exact patterns under "host[:port]", wildcard
// patterns under "*.suffix[:port]". A lookup costs two map probes per image plus a
// check of the rules found there, whatever the number of entries.
type matcher struct {
	entries []configEntry
	byKey   map[string][]rule
}

func loadConfig(path string) (*matcher, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg peerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := newMatcher(cfg.Entries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func newMatcher(entries []configEntry) (*matcher, error) {
	m := &matcher{entries: entries, byKey: make(map[string][]rule)}
	for i, e := range entries {
		if e.Secret == "" {
			return nil, fmt.Errorf("entry %d: empty secret", i)
		}
		for _, p := range e.Match {
			key, prefix, err := parsePattern(p)
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
			m.byKey[key] = append(m.byKey[key], rule{entry: i, prefix: prefix})
		}
	}
	return m, nil
}

// parsePattern splits "host[:port][/path]" or "*.suffix[:port][/path]" into its index
// key (lower-cased host[:port], "*." kept for wildcards) and its path prefix.
func parsePattern(p string) (key, prefix string, err error) {
	domain, prefix, _ := strings.Cut(p, "/")
	prefix = strings.Trim(prefix, "/")
	if domain == "" {
		return "", "", fmt.Errorf("pattern %q: no registry host", p)
	}
	domain = strings.ToLower(domain)
	host, port, hasPort := splitHostPort(domain)
	if hasPort && (port == "" || strings.Trim(port, "0123456789") != "") {
		return "", "", fmt.Errorf("pattern %q: the port must be digits", p)
	}
	if strings.HasPrefix(host, "*") {
		if !strings.HasPrefix(host, "*.") || len(host) == 2 || strings.Contains(host[2:], "*") {
			return "", "", fmt.Errorf("pattern %q: '*' must be the whole first label", p)
		}
	} else if strings.Contains(host, "*") {
		return "", "", fmt.Errorf("pattern %q: '*' must be the whole first label", p)
	}
	if strings.Contains(prefix, "*") {
		return "", "", fmt.Errorf("pattern %q: '*' is only allowed in the host", p)
	}
	if domain == "index.docker.io" {
		domain = "docker.io" // as the reference parser normalises images
	}
	return domain, prefix, nil
}

// splitHostPort splits "host[:port]", leaving a bracketed IPv6 host whole.
func splitHostPort(domain string) (host, port string, hasPort bool) {
	start := 0
	if strings.HasPrefix(domain, "[") {
		if end := strings.IndexByte(domain, ']'); end >= 0 {
			start = end
		}
	}
	if i := strings.LastIndexByte(domain[start:], ':'); i >= 0 {
		return domain[:start+i], domain[start+i+1:], true
	}
	return domain, "", false
}

// normalizeImage reduces an image reference to its registry (lower-cased host[:port])
// and repository path, as the docker reference parser (ParseNormalizedNamed) does:
// "nginx:1.27" is docker.io, library/nginx; "localhost:5000/x" is localhost:5000, x.
// It does not validate the reference.
func normalizeImage(image string) (domain, path string) {
	name := image
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	first, rest, found := strings.Cut(name, "/")
	if found && (first == "localhost" || strings.ContainsAny(first, ".:")) {
		domain, path = strings.ToLower(first), rest
		if domain == "index.docker.io" {
			domain = "docker.io"
		}
	} else {
		domain, path = "docker.io", name
	}
	if domain == "docker.io" && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	return domain, path
}

// wildcardKey is the key a "*.suffix[:port]" pattern matching domain is filed under:
// the host without its first label, with the port. "" if the host has one label.
func wildcardKey(domain string) string {
	host, _, _ := splitHostPort(domain)
	if strings.HasPrefix(host, "[") {
		return ""
	}
	if dot := strings.IndexByte(host, '.'); dot > 0 && dot < len(host)-1 {
		return "*." + domain[dot+1:]
	}
	return ""
}

func pathMatches(prefix, path string) bool {
	return prefix == "" || path == prefix ||
		(strings.HasPrefix(path, prefix) && path[len(prefix)] == '/')
}

// match appends to dst the indices of the entries whose patterns match image, in
// config order, each once.
func (m *matcher) match(image string, dst []int) []int {
	if image == "" {
		return dst
	}
	domain, path := normalizeImage(image)
	start := len(dst)
	for _, r := range m.byKey[domain] {
		if pathMatches(r.prefix, path) {
			dst = append(dst, r.entry)
		}
	}
	exact := len(dst)
	if key := wildcardKey(domain); key != "" {
		for _, r := range m.byKey[key] {
			if pathMatches(r.prefix, path) {
				dst = append(dst, r.entry)
			}
		}
	}
	// Each bucket is in config order already; merge only when both contributed, and
	// drop an entry matched by two of its patterns.
	hits := dst[start:]
	if exact > start && len(dst) > exact {
		slices.Sort(hits)
	}
	return dst[:start+len(slices.Compact(hits))]
}
