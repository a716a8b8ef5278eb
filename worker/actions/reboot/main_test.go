package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		env      map[string]string
		file     string // what /workflow/power holds after
		now      string // mode passed to the immediate reboot
		wantFail bool
	}{
		{env: map[string]string{}, file: "reboot\n"},
		{env: map[string]string{"MODE": "poweroff"}, file: "poweroff\n"},
		{env: map[string]string{"MODE": "poweroff", "HOW": "now"}, now: "poweroff"},
		{env: map[string]string{"MODE": "halt"}, wantFail: true},
		{env: map[string]string{"HOW": "later"}, wantFail: true},
	} {
		dir := t.TempDir()
		var now string
		err := run(func(k string) string { return tc.env[k] }, dir, func(m string) error { now = m; return nil })
		if (err != nil) != tc.wantFail {
			t.Errorf("%v: err = %v", tc.env, err)
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, "power"))
		if string(b) != tc.file || now != tc.now {
			t.Errorf("%v: power file %q, immediate %q", tc.env, b, now)
		}
	}
}
