package logging

import (
	"bytes"
	"strings"
	"testing"
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
