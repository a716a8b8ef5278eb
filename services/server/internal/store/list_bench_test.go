package store

import (
	"context"
	"testing"

	"github.com/herd-metal/herd/proto/workflow"
)

// BenchmarkListWorkflows lists 10,000 live workflows (the web UI's fleet
// page reads them all at load): go test -run '^$' -bench ListWorkflows.
func BenchmarkListWorkflows(b *testing.B) {
	f := newFleet(b, 3600)
	ctx := context.Background()
	const n = 10000
	for range n {
		if _, err := f.s.CreateWorkflow(ctx, f.tpl, map[string]string{"device_1": mac1, "device_2": mac2}, noToggle); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		got := 0
		if err := f.s.ListWorkflows(ctx, func(*workflow.Workflow) error { got++; return nil }); err != nil {
			b.Fatal(err)
		}
		if got != n {
			b.Fatalf("listed %d workflows, want %d", got, n)
		}
	}
}
