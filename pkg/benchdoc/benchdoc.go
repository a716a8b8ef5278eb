// Package benchdoc writes a benchmark's figures into docs/benchmarks.md:
// each benchmark owns the section between its two markers and replaces
// only that, so the benchmarks can run in any order.
package benchdoc

import (
	"errors"
	"io/fs"
	"os"
	"strings"
)

// WriteSection puts body between "<!-- name:begin -->" and
// "<!-- name:end -->" in the file at path, replacing what was there, or
// appending the section (creating the file) when it has none.
func WriteSection(path, name, body string) error {
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	doc, section := string(old), begin+"\n"+body+end
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + section + doc[j+len(end):]
	case strings.TrimSpace(doc) == "":
		doc = "# herd benchmarks\n\nWritten by the `make bench-*` targets; each owns the section between its markers.\n\n" + section + "\n"
	default:
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
