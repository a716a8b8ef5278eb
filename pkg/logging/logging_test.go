package logging

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "mac", "aa:bb:cc:dd:ee:ff")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"mac":"aa:bb:cc:dd:ee:ff"`) {
		t.Fatalf("unexpected output %q", out)
	}
	for _, bad := range [][2]string{{"loud", "json"}, {"info", "xml"}} {
		if _, err := New(&buf, bad[0], bad[1]); err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("New(%q, %q) err = %v", bad[0], bad[1], err)
		}
	}
}

func TestWith(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	ctx := With(context.Background(), "peer", "10.0.0.9:4711")
	ctx = With(ctx, "identity", "worker:abc")
	l.With("component", "api").InfoContext(ctx, "action reported", "state", "SUCCESS")
	l.Info("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	for _, want := range []string{`"peer":"10.0.0.9:4711"`, `"identity":"worker:abc"`, `"component":"api"`, `"state":"SUCCESS"`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line lacks %s: %s", want, lines[0])
		}
	}
	if strings.Contains(lines[1], "peer") {
		t.Errorf("line without the context has its attributes: %s", lines[1])
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(10*time.Second, 2, 3)
	now := time.Unix(1000, 0)
	for i, want := range []bool{true, true, false, false, false} {
		if ok, _ := l.Allow("a", now); ok != want {
			t.Fatalf("line %d allowed %v, want %v", i, ok, want)
		}
	}
	// The next window's first line says how many were held back.
	if ok, n := l.Allow("a", now.Add(10*time.Second)); !ok || n != 3 {
		t.Fatalf("next window: %v, %d held back; want true, 3", ok, n)
	}
	// Other keys have their own budget, up to the bound; then they share.
	for _, k := range []string{"b", "c"} {
		if ok, _ := l.Allow(k, now); !ok {
			t.Fatalf("key %s refused", k)
		}
	}
	for i := range 10 {
		l.Allow(fmt.Sprint("flood-", i), now.Add(10*time.Second))
	}
	if l.Len() > 3 {
		t.Fatalf("%d keys tracked, bound 3", l.Len())
	}
	// Once their windows pass, the keys are forgotten for new ones.
	if ok, _ := l.Allow("late", now.Add(time.Hour)); !ok || l.Len() > 3 {
		t.Fatalf("late key: %v, %d tracked", ok, l.Len())
	}
}
