package store

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/herd-metal/herd/proto/workflow"
)

func logLines(n int, prefix string) []*workflow.LogLine {
	lines := make([]*workflow.LogLine, n)
	for i := range lines {
		lines[i] = &workflow.LogLine{Stream: "stdout", Text: fmt.Sprintf("%s %d", prefix, i)}
	}
	return lines
}

func collectLogs(t *testing.T, s *Store, id, task, action string) []string {
	t.Helper()
	var got []string
	err := s.ActionLogs(context.Background(), id, task, action, func(l *workflow.ActionLogs) error {
		for _, ln := range l.GetLines() {
			got = append(got, l.GetTaskName()+"/"+l.GetActionName()+" "+ln.GetStream()+" "+ln.GetText())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestActionLogs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	id := f.create(t)
	send := func(worker, task, action string, lines []*workflow.LogLine) error {
		return f.s.AppendActionLogs(ctx, &workflow.ActionLogs{WorkflowId: id, TaskName: task, ActionName: action, Lines: lines}, worker)
	}
	if err := send(f.hw1, "disk", "wipe", logLines(2, "wipe")); err != nil {
		t.Fatal(err)
	}
	if err := send(f.hw2, "os", "write", logLines(1, "write")); err != nil {
		t.Fatal(err)
	}
	if err := send("", "disk", "partition", logLines(1, "by admin")); err != nil {
		t.Fatal(err)
	}
	wantErr(t, send(f.hw2, "disk", "wipe", logLines(1, "x")), ErrPrecondition, "another machine")
	wantErr(t, send(uuid.NewString(), "disk", "wipe", logLines(1, "x")), ErrNotFound)
	wantErr(t, send(f.hw1, "disk", "nope", logLines(1, "x")), ErrNotFound, `"nope"`)
	wantErr(t, f.s.AppendActionLogs(ctx, &workflow.ActionLogs{WorkflowId: uuid.NewString(), TaskName: "disk", ActionName: "wipe"}, ""), ErrNotFound)

	// A retried batch is stored once.
	batch := &workflow.ActionLogs{WorkflowId: id, TaskName: "os", ActionName: "write", Lines: logLines(1, "retried"), BatchId: "b-1"}
	for range 2 {
		if err := f.s.AppendActionLogs(ctx, batch, f.hw2); err != nil {
			t.Fatal(err)
		}
	}

	got := strings.Join(collectLogs(t, f.s, id, "", ""), "\n")
	want := "disk/wipe stdout wipe 0\ndisk/wipe stdout wipe 1\ndisk/partition stdout by admin 0\nos/write stdout write 0\nos/write stdout retried 0"
	if got != want {
		t.Fatalf("logs:\n%s\nwant:\n%s", got, want)
	}
	if got := collectLogs(t, f.s, id, "os", ""); len(got) != 2 {
		t.Fatalf("task filter: %v", got)
	}

	// Past the cap lines are counted, and the reader is told.
	for range 21 { // 1 + 21*500 lines in all: 501 over the cap

		if err := send(f.hw1, "disk", "partition", logLines(500, "bulk")); err != nil {
			t.Fatal(err)
		}
	}
	lines := collectLogs(t, f.s, id, "disk", "partition")
	if len(lines) != MaxLogLines+1 || !strings.Contains(lines[len(lines)-1], "herd 501 more lines dropped") {
		t.Fatalf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
}
