package spec

import "testing"

func TestBrokenLine(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       int
	}{
		{"first line", "a: [\n", 1},
		{"mis-indented key under a mapping", "version: \"0.1\"\n  name: x\n", 2},
		{"mis-indented key in a list item", "tasks:\n  - name: a\n    worker: b\n   actions: c\n", 4},
		{"unclosed flow list", "a: 1\nb: 2\nc: [1,\n", 3},
		{"tab indentation", "a:\n\tb: 1\n", 2},
		{"no newline at the end", "a: 1\nb: \"x", 2},
		{"after a comment block", "# one\n# two\na: 1\nb: c: d\n", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if parsesAsYAML(tc.text) {
				t.Fatalf("%q parses; the case needs broken YAML", tc.text)
			}
			if got := brokenLine(tc.text); got != tc.want {
				t.Fatalf("brokenLine = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestAtLine(t *testing.T) {
	for _, tc := range []struct {
		line int
		want string
	}{
		{0, "is empty"},
		{-1, "is empty"},
		{7, "is empty (line 7)"},
	} {
		if got := atLine("is empty", tc.line); got != tc.want {
			t.Errorf("atLine(%d) = %q, want %q", tc.line, got, tc.want)
		}
	}
}
