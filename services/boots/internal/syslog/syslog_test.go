package syslog

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Message
		ok   bool
	}{
		{"<190>ipxe: Downloading kernel", Message{Facility: 23, Severity: 6, App: "ipxe", Text: "Downloading kernel"}, true},
		{"<13>Nov 27 04:39:37 node1 herd-worker[42]: action 1 started", Message{Facility: 1, Severity: 5, Hostname: "node1", App: "herd-worker", Text: "action 1 started"}, true},
		{"<34>1 2026-11-27T04:39:37Z node1 osie 1 - - disk wiped", Message{Facility: 4, Severity: 2, Hostname: "node1", App: "osie", Text: "disk wiped", RFC5424: true}, true},
		{`<34>1 2026-11-27T04:39:37Z node1 osie - ID1 [x@1 a="b"] with sd`, Message{Facility: 4, Severity: 2, Hostname: "node1", App: "osie", Text: "with sd", RFC5424: true}, true},
		{"<34>1 - - - - - -", Message{Facility: 4, Severity: 2, RFC5424: true}, true},
		{"no pri", Message{}, false},
		{"<999>x", Message{}, false},
		{"<>x", Message{}, false},
	}
	for _, tt := range tests {
		got, ok := Parse([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("Parse(%q) = %+v %v, want %+v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("<190>ipxe: x"))
	f.Add([]byte("<34>1 2026-11-27T04:39:37Z node1 osie - ID1 [x@1 a=\"]\"] m"))
	f.Fuzz(func(t *testing.T, b []byte) { Parse(b) })
}
