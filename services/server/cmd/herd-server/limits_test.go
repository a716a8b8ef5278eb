package main

import (
	"io"
	"testing"

	"github.com/herd-metal/herd/services/server/internal/transport"
)

// TestSizeLimitFlags: the size limits of issue 16 default to
// transport.DefaultLimits and are set by flag or HERD_* environment.
func TestSizeLimitFlags(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	s, _, err := parse(nil, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.limits.MaxMessageBytes != transport.DefaultLimits.MaxMessageBytes || s.limits.MaxHeaderBytes != transport.DefaultLimits.MaxHeaderBytes {
		t.Fatalf("defaults: %+v", s.limits)
	}
	env := map[string]string{"HERD_MAX_MESSAGE_BYTES": "1000"}
	s, _, err = parse([]string{"--max-header-bytes", "2000"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.limits.MaxMessageBytes != 1000 || s.limits.MaxHeaderBytes != 2000 {
		t.Fatalf("from the environment and a flag: %+v", s.limits)
	}
}
