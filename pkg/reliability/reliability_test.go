package reliability

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordReadRender(t *testing.T) {
	out := filepath.Join(t.TempDir(), "rows.jsonl")
	t.Setenv(EnvOut, out)
	t.Setenv(EnvSize, "")
	Record(t, Row{Case: "b: server killed", Done: "SIGKILL", Volume: "20 workflows", Recovery: 1500 * time.Millisecond})
	t.Setenv(EnvSize, "full")
	Record(t, Row{Case: "a: pipe | in name", Done: "x", Volume: "1", Lost: 2, Notes: "two\nlines"})
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := Read(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Full || !rows[1].Full || rows[0].Recovery != 1500*time.Millisecond {
		t.Fatalf("rows read back: %+v", rows)
	}
	doc := Render(rows, "abc123", time.Date(2026, 12, 2, 22, 0, 0, 0, time.UTC))
	for _, want := range []string{
		"commit `abc123`, 2026-12-02 22:00 UTC",
		"| a: pipe \\| in name | x | 1 | 2 | — | two lines |",
		"| b: server killed (short form) | SIGKILL | 20 workflows | 0 | 1.5s |  |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
	if strings.Index(doc, "| a:") > strings.Index(doc, "| b:") {
		t.Errorf("rows not sorted by case:\n%s", doc)
	}
	if _, err := Read([]byte("{not json\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("Read of a bad line: %v, want an error naming line 1", err)
	}
}

func TestSize(t *testing.T) {
	t.Setenv(EnvSize, "")
	if Size(2, 200) != 2 {
		t.Error("short form should give the short size")
	}
	t.Setenv(EnvSize, "full")
	if Size(2, 200) != 200 {
		t.Error("full form should give the full size")
	}
}
