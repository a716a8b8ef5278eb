package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hwspec "github.com/herd-metal/herd/pkg/spec"
)

func TestHardwareJSONIsValid(t *testing.T) {
	m := machine{ID: "5a4d0000-0000-4000-8000-525400880050", MAC: vmMAC, IP: vmIP, Hostname: "vm-1"}
	for _, pxe := range []bool{true, false} {
		hw, err := hwspec.ParseHardware([]byte(hardwareJSON(m, pxe)))
		if err != nil {
			t.Fatalf("allow_pxe=%v: %v", pxe, err)
		}
		i := hw.GetNetwork().GetInterfaces()[0]
		if i.GetNetboot().GetAllowPxe() != pxe || !i.GetNetboot().GetAllowWorkflow() || i.GetDhcp().GetIp().GetAddress() != vmIP {
			t.Errorf("allow_pxe=%v: %v", pxe, i)
		}
	}
}

func TestTemplateIsValid(t *testing.T) {
	y := template("http://10.88.0.1/osie/disk.img.gz", strings.Repeat("ab", 32))
	if err := hwspec.ValidateTemplate(y); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	for _, want := range []string{"image2disk", "writefile", "reboot", "DEST_DISK: /dev/vda2", "COMPRESSED: \"true\""} {
		if !strings.Contains(y, want) {
			t.Errorf("template lacks %q:\n%s", want, y)
		}
	}
}

func TestParseEventAndTimes(t *testing.T) {
	lines := []string{
		`{"workflow_id":"w","task_name":"boot","action_name":"boot","action_status":"STATE_RUNNING","seconds":"0","message":"ipxe script served","created_at":"2026-01-01T00:00:00Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"image2disk","action_status":"STATE_RUNNING","seconds":"0","created_at":"2026-01-01T00:00:10Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"image2disk","action_status":"STATE_SUCCESS","seconds":"12","created_at":"2026-01-01T00:00:22.500Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"reboot","action_status":"STATE_SUCCESS","seconds":1,"created_at":"2026-01-01T00:00:30Z"}`,
	}
	var evs []event
	for _, l := range lines {
		e, err := parseEvent(l)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if evs[2].State != "SUCCESS" || evs[2].Seconds != 12 || evs[3].Seconds != 1 {
		t.Fatalf("parsed %+v", evs)
	}
	at := actionTimes(evs)
	if len(at) != 3 || at[1].Name != "image2disk" || at[1].duration() != 12500*time.Millisecond || at[2].duration() != time.Second {
		t.Fatalf("actionTimes = %+v", at)
	}
	if !allActionsSucceeded(evs) {
		t.Error("boot notes must not count as an unfinished action")
	}
}

func TestMarkerHostname(t *testing.T) {
	for _, tc := range []struct {
		line, md, file string
		ok             bool
	}{
		{"[    3.2] herd-installed-os: hostname=vm-1 (metadata) file=vm-1", "vm-1", "vm-1", true},
		{"herd-installed-os: hostname=? (metadata: 404) file=herd-unprovisioned", "?", "herd-unprovisioned", true},
		{"something else", "", "", false},
	} {
		md, file, ok := markerHostname(tc.line)
		if md != tc.md || file != tc.file || ok != tc.ok {
			t.Errorf("%q: got %q %q %v", tc.line, md, file, ok)
		}
	}
}

func TestPidFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pids"), 0o755)
	exe, _ := os.Executable()
	os.WriteFile(filepath.Join(dir, "pids", "10-a.pid"), []byte("1\n/x\n"), 0o644)                                               // pid 1: refused
	os.WriteFile(filepath.Join(dir, "pids", "20-self.pid"), []byte(strings.Join([]string{itoa(os.Getpid()), exe}, "\n")), 0o644) // alive
	os.WriteFile(filepath.Join(dir, "pids", "30-other.pid"), []byte(itoa(os.Getpid())+"\n/usr/bin/not-this\n"), 0o644)           // reused pid
	pfs, err := readPidFiles(dir)
	if err != nil || len(pfs) != 2 {
		t.Fatalf("readPidFiles = %v, %v", pfs, err)
	}
	if !strings.HasSuffix(pfs[0].path, "30-other.pid") || pfs[0].alive() {
		t.Errorf("a pid running another program must not count as ours: %+v", pfs[0])
	}
	if !pfs[1].alive() {
		t.Errorf("own process not alive: %+v", pfs[1])
	}
}

func itoa(n int) string { return fmt.Sprint(n) }

func TestNetnsCommandsUse10x(t *testing.T) {
	for _, c := range netnsCommands() {
		s := strings.Join(c, " ")
		if c[0] != "ip" || (!strings.Contains(s, "-n "+nsName) && !strings.Contains(s, "netns add "+nsName)) {
			t.Errorf("%q does not stay in namespace %s", s, nsName)
		}
		if strings.Contains(s, "addr add") && !strings.Contains(s, " 10.") {
			t.Errorf("%q: only 10.x addresses", s)
		}
	}
}
