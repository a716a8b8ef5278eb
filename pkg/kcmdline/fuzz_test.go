package kcmdline

import (
	"slices"
	"strings"
	"testing"
)

// FuzzSplit: a command line from outside (boots writes it, but a machine's
// firmware or an operator may hand anything) never panics Split, and what
// Split returns is stable: its fields are non-empty, hold no whitespace
// outside quotes, and joined with spaces split back the same.
func FuzzSplit(f *testing.F) {
	for _, seed := range []string{
		`herd.server=10.1.0.1:42113 herd.token=abc BOOTIF=01-52-54-00-12-34-56 console=ttyS0`,
		`a="b c" d`,
		`"unbalanced rest of line`,
		"\t\n  ",
		`x=" " y=""  z="a"b"c"`,
		"\xff\xfe \x00",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		fields := Split(line)
		for i, field := range fields {
			if field == "" {
				t.Fatalf("field %d is empty: %q", i, fields)
			}
			quoted := false
			for _, r := range field {
				if r == '"' {
					quoted = !quoted
				}
				if !quoted && (r == ' ' || r == '\t' || r == '\n') {
					t.Fatalf("field %d %q holds whitespace outside quotes", i, field)
				}
			}
			if quoted && i != len(fields)-1 {
				t.Fatalf("field %d %q opens a quote it does not close, yet fields follow: %q", i, field, fields)
			}
		}
		if again := Split(strings.Join(fields, " ")); !slices.Equal(again, fields) {
			t.Fatalf("Split(Join(%q)) = %q", fields, again)
		}
	})
}
