package benchdoc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteSection(t *testing.T) {
	file := filepath.Join(t.TempDir(), "benchmarks.md")
	read := func() string {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	steps := []struct {
		name, body string
		want       []string
		notWant    []string
	}{
		{"a", "first a", []string{"# herd benchmarks", "<!-- a:begin -->\nfirst a\n<!-- a:end -->"}, nil},
		{"b", "first b\n", []string{"first a", "<!-- b:begin -->\nfirst b\n<!-- b:end -->"}, nil},
		{"a", "second a", []string{"second a", "first b"}, []string{"first a"}},
	}
	for _, s := range steps {
		if err := WriteSection(file, s.name, s.body); err != nil {
			t.Fatal(err)
		}
		doc := read()
		for _, w := range s.want {
			if !strings.Contains(doc, w) {
				t.Fatalf("after %s=%q, %q missing:\n%s", s.name, s.body, w, doc)
			}
		}
		for _, w := range s.notWant {
			if strings.Contains(doc, w) {
				t.Fatalf("after %s=%q, %q still there:\n%s", s.name, s.body, w, doc)
			}
		}
	}
	if n := strings.Count(read(), "<!-- a:begin -->"); n != 1 {
		t.Fatalf("section a appears %d times", n)
	}
	if i, j := strings.Index(read(), "second a"), strings.Index(read(), "first b"); i > j {
		t.Fatal("a replaced section moved")
	}
}
