package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDiagnose(t *testing.T) {
	upTo := func(last string, ovh bool) map[string]time.Duration {
		seen := map[string]time.Duration{}
		for i, s := range bootSteps {
			if s.ovhOnly && !ovh {
				continue
			}
			seen[s.name] = time.Duration(i+1) * time.Second
			if s.name == last {
				break
			}
		}
		return seen
	}
	with := func(seen map[string]time.Duration, extra ...string) map[string]time.Duration {
		for _, e := range extra {
			seen[e] = time.Minute
		}
		return seen
	}
	ovhUnknown := &unknownCaller{mac: "52:54:00:89:00:50", remote: "10.89.0.150:3154", iface: "net0", reason: "unknown_mac",
		hint:       "net1's MAC 52:54:00:88:00:50 is known to herd, but the request came from 10.89.0.150 with net0's MAC 52:54:00:89:00:50: before chaining auto.ipxe, ifclose net0 (while it is open its route wins) and set iface net1",
		knownIface: "net1", knownMAC: "52:54:00:88:00:50", count: 10}
	running := []actionTime{{Name: "boot", State: "RUNNING"}, {Name: "image2disk", State: "SUCCESS"}, {Name: "writefile", State: "RUNNING"}}
	failed := []actionTime{{Name: "image2disk", State: "SUCCESS"}, {Name: "writefile", State: "FAILED", Message: "open /dev/vda2: no such device\nmore"}}
	tests := []struct {
		name          string
		in            diagInput
		last, missing string
		hint          []string
		provisioned   bool
	}{
		{name: "nothing at all", in: diagInput{seen: map[string]time.Duration{}},
			missing: "herd-boots' DHCP answer with auto.ipxe", hint: []string{"--dhcp-interface", "allow_pxe"}},
		{name: "OVH: not even the provider", in: diagInput{ovh: true, seen: map[string]time.Duration{}},
			missing: "the provider's DHCP answer", hint: []string{"provider-dnsmasq.log"}},
		{name: "OVH: the provider script, no DHCP from herd", in: diagInput{ovh: true, seen: upTo(stepProviderScript, true)},
			last: stepProviderScript, missing: "herd-boots' DHCP answer", hint: []string{"`dhcp net1`"}},
		{name: "OVH: provider script without ifclose/set iface (issue 13)",
			in:   diagInput{ovh: true, seen: with(upTo(stepAuto, true), stepUnknown, stepGaveUp), unknown: ovhUnknown},
			last: stepAuto, missing: "herd-boots serving this machine's OSIE script",
			hint: []string{"herd-boots did not know the caller: MAC 52:54:00:89:00:50 from 10.89.0.150:3154 (interface net0, unknown_mac)",
				"set iface net1", "`ifclose net0` and `set iface net1`", "routing table", "net0's MAC, which herd does not know"}},
		{name: "auto.ipxe gave up, herd-boots never heard", in: diagInput{seen: with(upTo(stepAuto, false), stepGaveUp)},
			last: stepAuto, missing: "herd-boots serving", hint: []string{"gave up", "ifclose net0"}},
		{name: "an unknown caller that later got its script is not the cause",
			in:   diagInput{seen: with(upTo(stepKernel, false), stepUnknown), unknown: ovhUnknown},
			last: stepKernel, missing: "iPXE fetching the OSIE initramfs", hint: []string{"--osie-initrd"}},
		{name: "DHCP answered, auto.ipxe never fetched", in: diagInput{seen: upTo(stepDHCP, false)},
			last: stepDHCP, missing: "iPXE fetching auto.ipxe", hint: []string{"routing table", "ifclose net0"}},
		{name: "kernel and initrd, no kernel output", in: diagInput{seen: upTo(stepInitrd, false)},
			last: stepInitrd, missing: "the OSIE kernel starting", hint: []string{"console="}},
		{name: "the worker never reports", in: diagInput{seen: upTo(stepWorker, false)},
			last: stepWorker, missing: "herd-worker's first report", hint: []string{"grpc_authority=", "logs/herd-server.log"}},
		{name: "an action still running", in: diagInput{seen: upTo(stepReported, false), actions: running},
			last: stepReported, missing: "the workflow's success", hint: []string{"action writefile was still RUNNING", "registry_username="}},
		{name: "a failed action", in: diagInput{seen: with(upTo(stepReported, false), "workflow FAILED"), actions: failed, wfState: "FAILED"},
			last: "workflow FAILED", missing: "the workflow's success", hint: []string{"the workflow ended FAILED: action writefile FAILED (open /dev/vda2: no such device)"}},
		{name: "the disk does not boot", in: diagInput{seen: upTo(stepSuccess, false), wfState: "SUCCESS"},
			last: stepSuccess, missing: "the installed OS booting from its disk", hint: []string{"allow_pxe=false"}},
		{name: "provisioned", in: diagInput{ovh: true, seen: upTo(stepInstalled, true), wfState: "SUCCESS"}, last: stepInstalled, provisioned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := diagnose(tt.in)
			if d.last != tt.last || !strings.HasPrefix(d.missing, tt.missing) {
				t.Fatalf("last %q missing %q, want %q, %q", d.last, d.missing, tt.last, tt.missing)
			}
			for _, h := range tt.hint {
				if !strings.Contains(d.hint, h) {
					t.Errorf("hint lacks %q: %s", h, d.hint)
				}
			}
			lines := diagnosisLines(d)
			if tt.provisioned != (d.hint == "") || tt.provisioned != (len(lines) == 0) {
				t.Fatalf("provisioned=%v, got hint %q, lines %q", tt.provisioned, d.hint, lines)
			}
			if !tt.provisioned && (!strings.HasPrefix(lines[0], "last step  ") || lines[1] != "never saw  "+d.missing || lines[2] != "hint       "+d.hint) {
				t.Errorf("lines %q", lines)
			}
		})
	}
}

func TestStall(t *testing.T) {
	tests := []struct {
		name       string
		seen       map[string]time.Duration
		last       string
		since, now time.Duration
		noticed    string
		notice     bool
		stop       string
	}{
		{"busy", map[string]time.Duration{stepDHCP: 5 * time.Second}, stepDHCP, 5 * time.Second, time.Minute, "", false, ""},
		{"quiet for long", map[string]time.Duration{stepDHCP: 5 * time.Second}, stepDHCP, 5 * time.Second, 5 * time.Minute, "", true, ""},
		{"said once per step", map[string]time.Duration{stepDHCP: 5 * time.Second}, stepDHCP, 5 * time.Second, 9 * time.Minute, stepDHCP, false, ""},
		{"nothing since power-on", map[string]time.Duration{}, "", 0, 4 * time.Minute, "x", true, ""},
		{"auto.ipxe gave up: stop", map[string]time.Duration{stepAuto: time.Second, stepGaveUp: time.Minute}, stepGaveUp, time.Minute, time.Minute, "", false, "auto.ipxe gave up without this machine's script"},
		{"a give-up after the script is no dead end", map[string]time.Duration{stepOSIEScript: time.Second, stepGaveUp: time.Minute}, stepGaveUp, time.Minute, time.Minute, "", false, ""},
		{"provisioned", map[string]time.Duration{stepInstalled: time.Minute}, stepInstalled, time.Minute, time.Hour, "", false, ""},
	}
	for _, tt := range tests {
		notice, stop := stall(tt.seen, tt.last, tt.since, tt.now, tt.noticed)
		if notice != tt.notice || stop != tt.stop {
			t.Errorf("%s: notice %v stop %q, want %v %q", tt.name, notice, stop, tt.notice, tt.stop)
		}
	}
}

// herd-boots' unknown-caller line, as its JSON log writes it.
const unknownLine = `{"time":"2026-01-01T00:00:00Z","level":"WARN","msg":"http: script for an unknown caller","mac":"52:54:00:89:00:50","remote":"10.89.0.150:3154","iface":"net0","reason":"unknown_mac","hint":"net1's MAC 52:54:00:88:00:50 is known to herd, but ... set iface net1","known_iface":"net1","known_mac":"52:54:00:88:00:50","hardware_id":"5a4d0000-0000-4000-8000-525400880050","suppressed":3}`

// TestFollowBootsUnknownCaller: the live view shows herd-boots'
// unknown-caller warnings as they are written, with the MAC, address and
// interface, for the machine whose other NIC herd knows, and keeps them
// for the diagnosis.
func TestFollowBootsUnknownCaller(t *testing.T) {
	ms, _ := newMachines(2, "vm%d", false, true)
	ps := []*progress{{m: ms[0], label: "vm1: ", powerOn: time.Now()}, {m: ms[1], label: "vm2: ", powerOn: time.Now()}}
	out := &lockedBuf{}
	sb := &sandbox{dir: t.TempDir(), out: out, start: time.Now()}
	os.MkdirAll(filepath.Join(sb.dir, "logs"), 0o755)
	log := sb.logPath("herd-boots")
	os.WriteFile(log, nil, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sb.followBoots(ctx, ps) }()
	time.Sleep(300 * time.Millisecond) // it follows from the end
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(unknownLine + "\n" + strings.Replace(unknownLine, `"suppressed":3`, `"suppressed":2`, 1) + "\n" +
		`{"level":"INFO","msg":"http: auto.ipxe","script":"auto","remote":"10.88.0.50:1"}` + "\n" +
		`{"level":"INFO","msg":"boot event","event":"kernel_fetched","mac":"52-54-00-88-00-50","remote":"10.88.0.50:1"}` + "\n")
	f.Close()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "kernel_fetched"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	cancel()
	<-done
	got := out.String()
	for _, want := range []string{
		"vm1: boots: WARNING unknown caller: MAC 52:54:00:89:00:50 from 10.89.0.150:3154, interface net0 (unknown_mac), 4 requests",
		"vm1: boots: hint: net1's MAC 52:54:00:88:00:50 is known to herd",
		`vm1: boots: iPXE script "auto" served`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("live view lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "vm2: boots: WARNING") {
		t.Errorf("the warning went to the other machine:\n%s", got)
	}
	ps[0].mu.Lock()
	defer ps[0].mu.Unlock()
	if ps[0].unknown == nil || ps[0].unknown.count != 7 || ps[0].unknown.knownIface != "net1" {
		t.Errorf("kept %+v, want the last warning with 7 requests", ps[0].unknown)
	}
	in := sb.diagInputOf(ps[0])
	for _, s := range []string{stepUnknown, stepAuto, stepKernel} {
		if _, ok := in.seen[s]; !ok {
			t.Errorf("no milestone %q: %v", s, in.seen)
		}
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestStepsAreMarked: every step the diagnosis reads is one vm.go or
// provider.go marks, under its literal name or its constant.
func TestStepsAreMarked(t *testing.T) {
	var src string
	for _, f := range []string{"vm.go", "provider.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src += string(b)
	}
	consts := map[string]string{stepProviderScript: "stepProviderScript", stepDHCP: "stepDHCP", stepAuto: "stepAuto",
		stepOSIEScript: "stepOSIEScript", stepKernel: "stepKernel", stepInitrd: "stepInitrd", stepOSIEKernel: "stepOSIEKernel",
		stepInit: "stepInit", stepLease: "stepLease", stepDocker: "stepDocker", stepWorker: "stepWorker", stepReported: "stepReported",
		stepDiskKernel: "stepDiskKernel", stepInstalled: "stepInstalled", stepUnknown: "stepUnknown", stepGaveUp: "stepGaveUp"}
	names := []string{stepUnknown, stepGaveUp}
	for _, s := range bootSteps {
		names = append(names, s.name)
	}
	for _, n := range names {
		if n == stepSuccess {
			// marked as "workflow " + state
			if !strings.Contains(src, `p.mark("workflow " + state)`) {
				t.Errorf("the workflow's state is not marked")
			}
			continue
		}
		if !strings.Contains(src, strconv.Quote(n)) && !strings.Contains(src, "mark("+consts[n]+")") && !strings.Contains(src, ", "+consts[n]+"}") {
			t.Errorf("step %q is marked nowhere", n)
		}
	}
}
