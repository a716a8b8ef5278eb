package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFault(t *testing.T) {
	for _, tc := range []struct {
		fault, during string
		want          []string
		err           string
	}{
		{"", "image2disk", nil, ""},
		{"osie-reboot", "image2disk", []string{"image2disk"}, ""},
		{"osie-reboot", "image2disk, image2disk,writefile", []string{"image2disk", "image2disk", "writefile"}, ""},
		{"osie-reboot", "writefile", []string{"writefile"}, ""},
		{"osie-reboot", "writefile,image2disk", nil, "comes before"},
		{"osie-reboot", "reboot", nil, `"reboot" is not an action`},
		{"osie-reboot", "", nil, `"" is not an action`},
		{"power-cut", "image2disk", nil, `--fault "power-cut"`},
		{"kill-server", "image2disk", []string{"image2disk"}, ""},
		{"kill-server", "reboot", nil, `"reboot" is not an action`},
	} {
		got, err := parseFault(tc.fault, tc.during)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q %q: error %v, want one naming %q", tc.fault, tc.during, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%q %q: %q, %v; want %q", tc.fault, tc.during, got, err, tc.want)
		}
	}
	var errb strings.Builder
	if _, _, code := parseArgs([]string{"up", "--fault", "osie-reboot", "--fault-during", "reboot"}, &errb); code != 2 || !strings.Contains(errb.String(), "reboot") {
		t.Errorf("parseArgs: exit %d: %s", code, errb.String())
	}
}

func TestStreamingLine(t *testing.T) {
	for _, tc := range []struct {
		line, want string
		ok         bool
	}{
		{"19:01:02 install/image2disk stdout: downloaded 4194304 of 12447646 bytes (33%), wrote 0 bytes, 0.0 MB/s",
			"downloaded 4194304 of 12447646 bytes (33%), wrote 0 bytes, 0.0 MB/s", true},
		{"19:01:02 install/image2disk stdout: downloaded 1 bytes, wrote 0 bytes, 0.0 MB/s", "downloaded 1 bytes, wrote 0 bytes, 0.0 MB/s", true},
		{"19:01:01 install/image2disk stdout: downloaded 0 of 12447646 bytes (0%), wrote 0 bytes, 0.0 MB/s", "", false},
		{"19:01:03 install/image2disk stdout: wrote 59768832 bytes to /dev/vda from 12447646 bytes downloaded", "", false},
		{"19:01:03 install/image2disk stdout: downloaded many", "", false},
		{"", "", false},
	} {
		got, ok := streamingLine(tc.line)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %q %v, want %q %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOSIEBoot(t *testing.T) {
	p := &progress{resets: make([]vmReset, 2)}
	for _, tc := range []struct {
		n     int
		osie  bool
		reset int
	}{{1, true, 0}, {2, true, 1}, {3, true, 2}, {4, false, 3}} {
		osie, reset := p.osieBoot(tc.n)
		if osie != tc.osie || (osie && reset != tc.reset) {
			t.Errorf("kernel %d after 2 resets: osie %v reset %d, want %v %d", tc.n, osie, reset, tc.osie, tc.reset)
		}
	}
	if osie, _ := (&progress{}).osieBoot(2); osie {
		t.Error("without a reset the second kernel is the installed OS's")
	}
}

func TestFaultVerdict(t *testing.T) {
	at, ev := eventClock()
	notes := []event{
		{Task: "netboot", Action: "netboot", State: "PENDING", CreatedAt: at(0)},
		{Task: "boot", Action: "boot", State: "RUNNING", CreatedAt: at(1)},
	}
	good := append(append([]event(nil), notes...),
		ev("image2disk", "RUNNING", 20), ev("image2disk", "SUCCESS", 80),
		ev("writefile", "RUNNING", 80), ev("writefile", "SUCCESS", 120),
		ev("reboot", "RUNNING", 120), ev("reboot", "SUCCESS", 125),
		event{Task: "netboot", Action: "netboot", State: "SUCCESS", CreatedAt: at(125)})
	reset := func(action string, s float64) vmReset {
		return vmReset{Action: action, At: at(s), Kernel: at(s + 6), Worker: at(s + 18), Report: at(s + 19)}
	}
	for _, tc := range []struct {
		name    string
		evs     []event
		resets  []vmReset
		planned []string
		want    []string // each a part of one problem; none: no problem
	}{
		{"rerun", good, []vmReset{reset("image2disk", 30)}, []string{"image2disk"}, nil},
		{"three resets", good, []vmReset{reset("image2disk", 30), reset("image2disk", 55), reset("writefile", 85)},
			[]string{"image2disk", "image2disk", "writefile"}, nil},
		{"reset after the action ended", good, []vmReset{reset("image2disk", 90)}, []string{"image2disk"},
			[]string{"reset 1 came after image2disk's SUCCESS"}},
		{"fewer resets", good, nil, []string{"image2disk"}, []string{"reset 0 time(s) of the 1 planned"}},
		{"SUCCESS twice", append(append([]event(nil), good...), ev("image2disk", "SUCCESS", 130)),
			[]vmReset{reset("image2disk", 30)}, []string{"image2disk"},
			[]string{"install/image2disk reported SUCCESS 2 times", "install/image2disk: 1 RUNNING, 2 SUCCESS"}},
		{"RUNNING recorded twice", append(append([]event(nil), good[:3]...), append([]event{ev("image2disk", "RUNNING", 50)}, good[3:]...)...),
			[]vmReset{reset("image2disk", 30)}, []string{"image2disk"}, []string{"install/image2disk: 2 RUNNING, 1 SUCCESS"}},
		{"timed out", append(append([]event(nil), notes...), ev("image2disk", "RUNNING", 20), ev("image2disk", "TIMEOUT", 920)),
			[]vmReset{reset("image2disk", 30)}, []string{"image2disk"}, []string{"install/image2disk: 1 RUNNING, 0 SUCCESS and 1 other"}},
		{"no kernel, no report", good, []vmReset{{Action: "image2disk", At: at(30)}}, []string{"image2disk"},
			[]string{"reset 1: the OSIE's kernel did not start again", "reset 1: no action report"}},
		{"no events", notes, nil, nil, []string{"no action events"}},
	} {
		checkProblems(t, tc.name, faultVerdict(tc.evs, tc.resets, tc.planned), tc.want)
	}
}

// eventClock gives a verdict test its times (at: seconds after a fixed
// start) and the template's action events (ev).
func eventClock() (at func(float64) time.Time, ev func(action, state string, s float64) event) {
	t0 := time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC)
	at = func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ev = func(action, state string, s float64) event {
		return event{Task: "install", Action: action, State: state, CreatedAt: at(s)}
	}
	return at, ev
}

// checkProblems checks a verdict's problems: as many as want, each
// saying its part of want.
func checkProblems(t *testing.T, name string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %q, want %d problem(s) %q", name, got, len(want), want)
		return
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("%s: problem %d %q, want it to say %q", name, i, got[i], w)
		}
	}
}

// TestQMPExecute resets a real QEMU (no guest: -machine none) over its QMP
// socket, and gets QEMU's refusal of a command it lacks.
func TestQMPExecute(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		missing(t, "qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "none", "-display", "none", "-nodefaults", "-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("QEMU made no QMP socket")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := qmpExecute(ctx, sock, "system_reset"); err != nil {
		t.Fatalf("system_reset: %v", err)
	}
	if err := qmpExecute(ctx, sock, "no-such-command"); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("an unknown command: %v, want QEMU's CommandNotFound", err)
	}
	if err := qmpExecute(ctx, filepath.Join(t.TempDir(), "none.sock"), "system_reset"); err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("no socket: %v, want an error naming it", err)
	}
}

// missing fails under CI=true (a real part missing never skips there) and
// skips elsewhere.
func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (CI=true: a missing real part fails; make deps)", what)
	}
	t.Skipf("%s is missing (make deps)", what)
}

// A state directory too long for a unix socket's path leaves the VM
// without QMP (QEMU would not start), and --fault is refused for it.
func TestQMPSocketPathBound(t *testing.T) {
	ms, _ := newMachines(1, "vm", false, false)
	short := (&sandbox{dir: "/tmp/s"}).vmFiles(ms[0])
	if short.qmp != "/tmp/s/vm/1/qmp.sock" || !strings.Contains(strings.Join(qemuArgs("qemu", ms[0], short, 2048, 1), " "), "-qmp unix:/tmp/s/vm/1/qmp.sock,") {
		t.Errorf("short directory: qmp %q", short.qmp)
	}
	long := (&sandbox{dir: "/" + strings.Repeat("d", 100)}).vmFiles(ms[0])
	if long.qmp != "" || strings.Contains(strings.Join(qemuArgs("qemu", ms[0], long, 2048, 1), " "), "-qmp") {
		t.Errorf("long directory: qmp %q", long.qmp)
	}
	if os.Geteuid() == 0 {
		var errb strings.Builder
		_, _, code := parseArgs([]string{"up", "--dir", "/" + strings.Repeat("d", 100), "--fault", "osie-reboot"}, &errb)
		if code != 2 || !strings.Contains(errb.String(), "too long for a unix socket") {
			t.Errorf("--fault with a long --dir: exit %d: %s", code, errb.String())
		}
	}
}
