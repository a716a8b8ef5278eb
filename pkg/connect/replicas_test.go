package connect

import (
	"strings"
	"testing"
)

func TestTarget(t *testing.T) {
	for _, c := range []struct {
		authority, target, err string
		opts                   int
	}{
		{"10.1.0.1:42113", "10.1.0.1:42113", "", 0},
		{"dns:///herd.example:42113", "dns:///herd.example:42113", "", 0},
		{"10.1.0.1:42113,10.1.0.2:42113", "herd-replicas:///herd-server", "", 2},
		{"10.1.0.1:42113, [fd00::2]:42113", "herd-replicas:///herd-server", "", 2},
		{"10.1.0.1:42113,", "", `server address "" in`, 0},
		{"10.1.0.1:42113,10.1.0.2", "", `server address "10.1.0.2" in "10.1.0.1:42113,10.1.0.2": want host:port`, 0},
		{"10.1.0.1:42113,:42113", "", `server address ":42113"`, 0},
		{"10.1.0.1:42113,10.1.0.1:42113", "", `server address "10.1.0.1:42113" twice`, 0},
	} {
		got, opts, err := target(c.authority)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want one saying %q", c.authority, err, c.err)
		case c.err == "" && (err != nil || got != c.target || len(opts) != c.opts):
			t.Errorf("%q: target %q with %d options, %v; want %q with %d", c.authority, got, len(opts), err, c.target, c.opts)
		}
	}
}
