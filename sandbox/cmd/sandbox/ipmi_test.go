package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hwspec "github.com/herd-metal/herd/pkg/spec"
)

// With BMCs the records name each machine's BMC and the stored
// credential; without, no bmc key at all (today's records).
func TestHardwareJSONWithBMC(t *testing.T) {
	ms, err := newMachines(2, "vm%d", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(hardwareJSON(ms[0], false), `"bmc"`) {
		t.Error("a bmc in the record without --power ipmi")
	}
	withBMCs(ms)
	seen := map[string]bool{}
	for _, m := range ms {
		hw, err := hwspec.ParseHardware([]byte(hardwareJSON(m, false)))
		if err != nil {
			t.Fatalf("machine %d: %v", m.N, err)
		}
		b := hw.GetBmc()
		if b.GetAddress() != m.BMCIP || b.GetProtocol() != "ipmi" || b.GetPort() != bmcPort || b.GetCredential() != bmcCredential {
			t.Errorf("machine %d: bmc %v", m.N, b)
		}
		if !strings.HasPrefix(m.BMCIP, "10.87.0.") || m.BMCIP == bmcNetIP || seen[m.BMCIP] {
			t.Errorf("machine %d: BMC address %q: want its own on 10.87.0.0/24", m.N, m.BMCIP)
		}
		seen[m.BMCIP] = true
	}
}

func TestNetnsCommandsBMCNetwork(t *testing.T) {
	ms, _ := newMachines(2, "vm%d", false, false)
	for _, c := range netnsCommands(ms) {
		if strings.Contains(strings.Join(c, " "), bmcLink) {
			t.Errorf("%v: no BMC network without --power ipmi", c)
		}
	}
	withBMCs(ms)
	var addrs []string
	for _, c := range netnsCommands(ms) {
		s := strings.Join(c, " ")
		if strings.Contains(s, "addr add") && strings.Contains(s, bmcPeer) {
			addrs = append(addrs, c[5])
		}
	}
	if want := []string{ms[0].BMCIP + "/24", ms[1].BMCIP + "/24"}; strings.Join(addrs, " ") != strings.Join(want, " ") {
		t.Errorf("BMC addresses %v, want %v", addrs, want)
	}
}

// The VM behind a BMC runs the sandbox's own command line, plus the BMC
// device and nothing else.
func TestIPMIVMArgs(t *testing.T) {
	ms, _ := newMachines(1, "vm", true, true)
	base := qemuArgs("qemu", ms[0], vmFiles{disk: "/d", console: "/c", vars: "/v"}, 2048, 1)
	got := ipmiVMArgs(base, 9101)
	if strings.Join(got[:len(base)], "\x00") != strings.Join(base, "\x00") {
		t.Fatalf("the command line changed:\n%q\n%q", base, got)
	}
	extra := strings.Join(got[len(base):], " ")
	for _, want := range []string{"socket,id=ipmi0,host=127.0.0.1,port=9101", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0", "isa-ipmi-kcs,bmc=bmc0"} {
		if !strings.Contains(extra, want) {
			t.Errorf("added %q, want %q in it", extra, want)
		}
	}
}

func TestCreatedWorkflowID(t *testing.T) {
	for _, c := range []struct{ out, want string }{
		{"Created Workflow: 1b2c\n", "1b2c"},
		{"Created Workflow: 1b2c\n2026-12-03T12:00:00Z job 9 hardware h netboot SUCCESS\n", "1b2c"},
		{"  Created Workflow:   77  \n", "77"},
		{"", ""},
		{"error: no such template\n", ""},
	} {
		if got := createdWorkflowID(c.out); got != c.want {
			t.Errorf("%q: %q, want %q", c.out, got, c.want)
		}
	}
}

func TestPowerVerdict(t *testing.T) {
	ok := []event{{Task: "bmc", Action: "netboot", State: "RUNNING"}, {Task: "bmc", Action: "netboot", State: "SUCCESS"}}
	on, off := "Chassis Power is on", "Chassis Power is off"
	for _, c := range []struct {
		name        string
		steps       []event
		on, off     string
		wantErrPart string
	}{
		{"all there", ok, on, off, ""},
		{"no job success", ok[:1], on, off, "no bmc netboot SUCCESS"},
		{"no events", nil, on, off, "no bmc netboot SUCCESS"},
		{"off after netboot", ok, off, off, "after the netboot"},
		{"still on at the end", ok, on, on, "at the end"},
		{"ipmitool failed", ok, on, "", "at the end"},
	} {
		err := powerVerdict(c.steps, c.on, c.off)
		switch {
		case c.wantErrPart == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErrPart != "" && (err == nil || !strings.Contains(err.Error(), c.wantErrPart)):
			t.Errorf("%s: %v, want an error about %q", c.name, err, c.wantErrPart)
		}
	}
}

// BMC job events are neither actions nor the worker's reports.
func TestBMCNotesAreNoActions(t *testing.T) {
	evs := []event{
		{Task: "bmc", Action: "netboot", State: "SUCCESS", Message: "bmc netboot SUCCESS"},
		{Task: "install", Action: "image2disk", State: "SUCCESS"},
	}
	if at := actionTimes(evs); len(at) != 1 || at[0].Name != "image2disk" {
		t.Errorf("actionTimes = %+v", at)
	}
}

// The chassis program, run for real with a stand-in for QEMU (a shell
// that daemonizes a sleep and writes its pid where -pidfile says): power
// on records the VM in the sandbox's pid-file format, status follows it,
// power off ends it, and the boot device is kept.
func TestChassisScript(t *testing.T) {
	for _, c := range []string{"sh", "sleep", "sed", "readlink"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("no %s", c)
		}
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-qemu")
	// Reads -pidfile FILE from its arguments, as QEMU does with -daemonize.
	if err := os.WriteFile(fake, []byte(`#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -pidfile ] && pf=$2; shift; done
sleep 60 </dev/null >/dev/null 2>&1 &
echo $! >"$pf"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "90-qemu-1.pid")
	script := filepath.Join(dir, "chassis.sh")
	if err := os.WriteFile(script, []byte(chassisScript(dir, pidFile, []string{fake, "-name", "it's quoted"})), 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(script, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("chassis %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run("get", "power", "boot"); got != "power:0\nboot:default" {
		t.Fatalf("at first: %q", got)
	}
	run("set", "boot", "pxe", "power", "1")
	if got := run("get", "power", "boot"); got != "power:1\nboot:pxe" {
		t.Errorf("after power on: %q", got)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pf, ok := parsePidFile(string(b))
	if !ok || !pf.alive() {
		t.Fatalf("pid file %q: not the running VM", b)
	}
	t.Cleanup(func() { _ = stopPid(pf, time.Second) })
	run("set", "power", "0")
	if got := run("get", "power"); got != "power:0" {
		t.Errorf("after power off: %q", got)
	}
	for i := 0; i < 50 && pf.alive() && !zombie(pf.pid); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if pf.alive() && !zombie(pf.pid) {
		t.Errorf("pid %d still runs after power off", pf.pid)
	}
}
