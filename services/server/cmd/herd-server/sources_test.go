package main

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestParseWorkerSources: --worker-source-check and
// --worker-trusted-sources, flags and HERD_* environment.
func TestParseWorkerSources(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	s, _, err := parse(nil, env(nil), io.Discard)
	if err != nil || s.sources.Off || len(s.sources.Trusted) != 0 {
		t.Fatalf("default: %+v %v, want strict with no trusted source", s.sources, err)
	}
	s, _, err = parse([]string{"--worker-trusted-sources", "10.9.0.1, 10.8.0.0/16,fd00::/64"}, env(nil), io.Discard)
	want := []netip.Prefix{netip.MustParsePrefix("10.9.0.1/32"), netip.MustParsePrefix("10.8.0.0/16"), netip.MustParsePrefix("fd00::/64")}
	if err != nil || !slices.Equal(s.sources.Trusted, want) {
		t.Errorf("trusted sources: %v %v, want %v", s.sources.Trusted, err, want)
	}
	s, _, err = parse(nil, env(map[string]string{"HERD_WORKER_SOURCE_CHECK": "off"}), io.Discard)
	if err != nil || !s.sources.Off {
		t.Errorf("HERD_WORKER_SOURCE_CHECK=off: %+v %v", s.sources, err)
	}
	for _, args := range [][]string{{"--worker-source-check", "loose"}, {"--worker-trusted-sources", "gateway.example"}} {
		if _, _, err := parse(args, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--worker-") {
			t.Errorf("%v: %v, want an error naming the flag", args, err)
		}
	}
}
