package kcmdline

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{"", nil},
		{"   \n", nil},
		{"console=ttyS0 quiet", []string{"console=ttyS0", "quiet"}},
		{"  a=1\tb=2\nc ", []string{"a=1", "b=2", "c"}},
		{`herd.note="two words" x`, []string{`herd.note="two words"`, "x"}},
		{`a="unterminated b=c`, []string{`a="unterminated b=c`}},
		{`"quoted=key x"`, []string{`"quoted=key x"`}},
	}
	for _, tt := range tests {
		if got := Split(tt.line); !slices.Equal(got, tt.want) {
			t.Errorf("Split(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}
