package main

import (
	"context"
	"io"
	"testing"

	"github.com/herd-metal/herd/pkg/observe/probetest"
)

// healthcheck probes the /healthz of the herd-metadata listening on --metadata-addr
// (the container image's health check), from the same flags and
// environment the service runs with, and needs nothing else.
func TestHealthcheck(t *testing.T) {
	probetest.Healthcheck(t, "herd-metadata", "--metadata-addr", "HERD_METADATA_ADDR", func(args []string, lookup func(string) (string, bool)) error {
		return run(context.Background(), args, lookup, io.Discard, nil)
	})
}
