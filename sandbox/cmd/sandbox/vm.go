package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// milestone is a moment of the machine's provisioning.
type milestone struct {
	name string
	at   time.Time
}

// progress collects what the watchers see of one machine, under one lock.
type progress struct {
	m          machine
	label      string // "vm2: " when there are several, else ""
	mu         sync.Mutex
	powerOn    time.Time
	milestones []milestone
	events     []event
	kernels    int
	marker     string
	wfState    string
	// unknown is herd-boots' last warning that it did not know the
	// machine (diagnose.go).
	unknown *unknownCaller
	// ipmiOn and ipmiOff are ipmitool's power status after the BMC's
	// netboot and at the end (--power ipmi).
	ipmiOn, ipmiOff string
	// resets are the VM's resets (--fault osie-reboot, fault.go), and
	// faultErr why they stopped short of the plan.
	resets   []vmReset
	faultErr error
	// kills are the herd-server replicas killed (--fault kill-server,
	// killserver.go), on machine 1's progress.
	kills []serverKill
}

func (p *progress) mark(name string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.milestones {
		if m.name == name {
			return m.at
		}
	}
	now := time.Now()
	p.milestones = append(p.milestones, milestone{name, now})
	return now
}

func (p *progress) at(name string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.milestones {
		if m.name == name {
			return m.at, true
		}
	}
	return time.Time{}, false
}

// vmLine prints a live line with the time since power-on.
func (sb *sandbox) vmLine(p *progress, format string, a ...any) {
	p.mu.Lock()
	since := time.Since(p.powerOn)
	p.mu.Unlock()
	sb.outMu.Lock()
	defer sb.outMu.Unlock()
	fmt.Fprintf(sb.out, "[%7.1fs] %s%s  (+%s since power-on)\n", time.Since(sb.start).Seconds(), p.label, fmt.Sprintf(format, a...), fmtDur(since))
}

// consoleMilestones are console lines worth a live line, by the text they
// hold. The first kernel is the OSIE's, the second the installed OS's.
var consoleMilestones = []struct{ text, label string }{
	{"herd OSIE init starting", "OSIE init started"},
	{"DHCP lease", "OSIE leased its address"},
	{"docker ready", "OSIE: docker ready"},
	{"worker started", "OSIE: herd-worker started"},
	{"workflow over", "OSIE: workflow over"},
	{"worker ended", "OSIE: herd-worker ended"},
	{"herd: giving up on herd_chain", stepGaveUp},
}

// runVMs powers every machine on at once, follows them until each is
// provisioned (or fails, or the timeout passes), and prints the summaries
// and the metrics check. ok is the verdict for all of them.
func (sb *sandbox) runVMs(ctx context.Context, ms []machine, wfIDs []string, clientEnv []string) (bool, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return false, fmt.Errorf("qemu-system-x86_64 (Debian package qemu-system-x86; make deps): %w", err)
	}
	exps := expectations(metricsURLs(serverReplicas(sb.opts.serverReplicas)))
	if sb.opts.power == powerIPMI {
		exps = append(exps, expectation{"herd-bmc", []string{"http://" + bmcHTTP + "/metrics"},
			series{"herd_bmc_jobs_total", map[string]string{"kind": "netboot", "state": "SUCCESS"}}, 1, "netboot jobs run on the BMCs"})
	}
	before, err := scrape(ctx, exps, nil)
	if err != nil {
		return false, err
	}
	ps := make([]*progress, len(ms))
	for i, m := range ms {
		ps[i] = &progress{m: m, powerOn: time.Now()}
		if len(ms) > 1 {
			ps[i].label = fmt.Sprintf("vm%d: ", m.N)
		}
	}
	followCtx, stopFollow := context.WithCancel(ctx)
	bootsDone := make(chan struct{})
	go func() { defer close(bootsDone); sb.followBoots(followCtx, ps) }()
	providerDone := make(chan struct{})
	go func() {
		defer close(providerDone)
		if ms[0].ProviderMAC != "" {
			sb.followProvider(followCtx, ps)
		}
	}()

	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = sb.runVM(ctx, qemu, ps[i], &wfIDs[i], clientEnv) }()
	}
	wg.Wait()
	stopFollow()
	<-bootsDone
	<-providerDone

	sb.progress = ps
	ok := true
	provisioned := make([]bool, len(ps))
	for i, p := range ps {
		provisioned[i] = sb.summary(wfIDs[i], p)
		ok = ok && provisioned[i]
	}
	after, merr := scrape(ctx, exps, sb.frozenPages())
	if merr == nil {
		lines, mok := metricsVerdict(exps, before, after, len(ms))
		fmt.Fprintf(sb.out, "metrics    (moved between power-on and the end, for %d machine(s))\n", len(ms))
		for _, l := range lines {
			fmt.Fprintf(sb.out, "  %s\n", l)
		}
		ok = ok && mok
	} else {
		fmt.Fprintf(sb.out, "metrics    could not be read: %v\n", merr)
		ok = false
	}
	ok = sb.checkSecrets(ms) && ok
	sb.verdict(ps, provisioned, ok)
	return ok, errors.Join(errs...)
}

// prepareVMFiles makes machine m's empty disk and, for UEFI, its own
// copy of OVMF's variables.
func (sb *sandbox) prepareVMFiles(m machine) error {
	f := sb.vmFiles(m)
	if err := os.MkdirAll(filepath.Dir(f.disk), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(f.disk, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(f.disk, int64(sb.opts.diskMiB)<<20); err != nil {
		return err
	}
	if m.UEFI {
		// OVMF keeps its boot entries there: each VM its own copy.
		if err := copyFile(ovmfVars, f.vars); err != nil {
			return fmt.Errorf("OVMF variables (Debian package ovmf; make deps): %w", err)
		}
	}
	return nil
}

// powerOn switches machine p's VM on: QEMU started by the sandbox
// (--power qemu), or by its BMC when herd's netboot job says so (--power
// ipmi: the workflow is created there, with --netboot, and *wfID set).
// done closes when the VM has ended.
func (sb *sandbox) powerOn(ctx context.Context, qemu string, p *progress, wfID *string, clientEnv []string) (done <-chan struct{}, err error) {
	o, m := sb.opts, p.m
	f := sb.vmFiles(m)
	vmLine := fmt.Sprintf("qemu-system-x86_64 (TCG, %d MiB, %d CPUs, %s, iPXE ROM on the boot NIC, empty %d MiB disk)", o.memMiB, o.smp, m.firmware(), o.diskMiB)
	if o.power == powerIPMI {
		sb.stage("%spowering on through the BMC %s:%d: herd workflow create --netboot (herd-bmc sets the next boot to the network and switches the VM on over IPMI; ipmi_sim's chassis_control starts %s)",
			p.label, m.BMCIP, bmcPort, vmLine)
		id, err := sb.netbootWorkflow(ctx, m, clientEnv)
		*wfID = id
		if err != nil {
			return nil, err
		}
		vm, at, err := sb.waitBMCVM(ctx, m.N, 30*time.Second)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.powerOn = at
		p.mu.Unlock()
		on, err := sb.ipmitool(ctx, m, sb.bmcPassword, "chassis", "power", "status")
		p.mu.Lock()
		p.ipmiOn = on
		p.mu.Unlock()
		sb.vmLine(p, "VM powered on by its BMC; ipmitool chassis power status: %s%s", on, errNote(err))
		sb.say("console: %s", f.console)
		return vm.done, nil
	}
	if err := sb.prepareVMFiles(m); err != nil {
		return nil, err
	}
	sb.stage("%spowering on: %s", p.label, vmLine)
	sb.say("console: %s", f.console)
	p.mu.Lock()
	p.powerOn = time.Now()
	p.mu.Unlock()
	vm, err := sb.startProc(spec{name: fmt.Sprintf("qemu-%d", m.N), netns: nsName, order: 90, args: qemuArgs(qemu, m, f, o.memMiB, o.smp)})
	if err != nil {
		return nil, err
	}
	return vm.done, nil
}

func errNote(err error) string {
	if err != nil {
		return " (" + err.Error() + ")"
	}
	return ""
}

// runVM runs one machine from power-on until it powers off after
// reporting from its installed OS, its workflow fails, or the timeout.
func (sb *sandbox) runVM(ctx context.Context, qemu string, p *progress, wfIDp *string, clientEnv []string) error {
	o, m := sb.opts, p.m
	f := sb.vmFiles(m)
	vmDone, err := sb.powerOn(ctx, qemu, p, wfIDp, clientEnv)
	if err != nil {
		return err
	}
	wfID := *wfIDp
	exited := func() bool {
		select {
		case <-vmDone:
			return true
		default:
			return false
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sb.followConsole(ctx, f.console, p) }()
	if o.fault != "" {
		wg.Add(1)
		go func() { defer wg.Done(); sb.runFault(ctx, p, wfID, clientEnv) }()
	}
	watchDone := make(chan error, 1)
	go func() {
		defer wg.Done()
		watchDone <- sb.followWorkflow(ctx, wfID, clientEnv, p)
	}()

	timeout := time.NewTimer(o.timeout)
	defer timeout.Stop()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var wd watchState
	var runErr error
	watched := watchDone
wait:
	for {
		select {
		case <-vmDone:
			p.mark("VM powered off")
			sb.vmLine(p, "VM powered off")
			break wait
		case err := <-watched:
			// Keep the result for below; after SUCCESS the VM goes on to
			// boot its disk, after anything else there is nothing to wait for.
			watchDone <- err
			watched = nil
			p.mu.Lock()
			state := p.wfState
			p.mu.Unlock()
			if state != "SUCCESS" {
				sb.vmLine(p, "workflow ended %s: stopping the VM", orNone(state))
				break wait
			}
		case <-timeout.C:
			sb.vmLine(p, "timeout: not provisioned within %s of power-on (--timeout)", o.timeout)
			sb.printDiagnosis(p)
			runErr = fmt.Errorf("%sthe VM was not provisioned within %s of power-on (see %s)", p.label, o.timeout, f.console)
			break wait
		case <-tick.C:
			if why := sb.watch(p, &wd); why != "" {
				sb.vmLine(p, "%s: stopping the VM", why)
				sb.printDiagnosis(p)
				runErr = fmt.Errorf("%s%s (see %s)", p.label, why, f.console)
				break wait
			}
		case <-ctx.Done():
			runErr = fmt.Errorf("interrupted: %w", ctx.Err())
			break wait
		}
	}
	if !exited() {
		pfs, _ := readPidFiles(sb.dir)
		for _, pf := range pfs {
			if strings.HasSuffix(pf.path, fmt.Sprintf("-qemu-%d.pid", m.N)) {
				_ = stopPid(pf, 2*time.Second)
			}
		}
	}
	if o.power == powerIPMI {
		// The cross-check: the BMC must see the VM off now.
		off, err := sb.ipmitool(context.WithoutCancel(ctx), m, sb.bmcPassword, "chassis", "power", "status")
		p.mu.Lock()
		p.ipmiOff = off
		p.mu.Unlock()
		sb.vmLine(p, "ipmitool chassis power status: %s%s", off, errNote(err))
	}
	// Let the watchers read the last lines.
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	select {
	case err := <-watchDone:
		if err != nil && runErr == nil && p.wfState == "" {
			runErr = err
		}
	default:
	}
	return runErr
}

// followConsole tails the serial console and reports its milestones.
func (sb *sandbox) followConsole(ctx context.Context, path string, p *progress) {
	tail(ctx, path, func(line string) {
		switch {
		case strings.Contains(line, "Linux version"):
			p.mu.Lock()
			p.kernels++
			n := p.kernels
			osie, reset := p.osieBoot(n)
			if osie && reset > 0 {
				p.resets[reset-1].Kernel = time.Now()
			}
			p.mu.Unlock()
			if n == 1 {
				p.mark("OSIE kernel started")
				sb.vmLine(p, "console: OSIE kernel started")
			} else if osie {
				p.mark(fmt.Sprintf("OSIE kernel started again (reset %d)", reset))
				sb.vmLine(p, "console: OSIE kernel started again, after reset %d", reset)
			} else {
				p.mark("installed OS kernel started")
				sb.vmLine(p, "console: installed OS kernel started (booted from its disk)")
			}
		case strings.Contains(line, "herd-installed-os:"):
			p.mu.Lock()
			p.marker = strings.TrimSpace(line[strings.Index(line, "herd-installed-os:"):])
			p.mu.Unlock()
			p.mark("installed OS reported")
			sb.vmLine(p, "console: %s", strings.TrimSpace(line[strings.Index(line, "herd-installed-os:"):]))
		default:
			for _, c := range consoleMilestones {
				if strings.Contains(line, c.text) {
					p.mu.Lock()
					first := p.kernels <= 1
					osie, reset := p.osieBoot(p.kernels)
					again := osie && reset > 0 && c.text == "worker started" && p.resets[reset-1].Worker.IsZero()
					if again {
						p.resets[reset-1].Worker = time.Now()
					}
					p.mu.Unlock()
					if _, seen := p.at(c.label); !seen && first {
						p.mark(c.label)
						sb.vmLine(p, "console: %s", c.label)
					}
					if again {
						p.mark(fmt.Sprintf("%s again (reset %d)", c.label, reset))
						sb.vmLine(p, "console: %s again, after reset %d", c.label, reset)
					}
				}
			}
		}
	})
}

// followBoots tails herd-boots' JSON log for what it answered the VMs.
func (sb *sandbox) followBoots(ctx context.Context, ps []*progress) {
	tailFrom(ctx, sb.logPath("herd-boots"), true, func(line string) {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil {
			return
		}
		str := func(k string) string { s, _ := l[k].(string); return s }
		remote := str("remote")
		if remote == "" {
			remote = str("peer")
		}
		mac := str("mac")
		if k := str("known_mac"); k != "" {
			mac = k // an unknown caller's other interface, which herd knows
		}
		p := progressFor(ps, mac, str("ip"), remote)
		if p == nil {
			return
		}
		if u, ok := unknownFromLog(l); ok {
			p.mu.Lock()
			if p.unknown != nil && p.unknown.mac == u.mac {
				u.count += p.unknown.count
			}
			p.unknown = &u
			p.mu.Unlock()
			p.mark(stepUnknown)
			sb.vmLine(p, "%s", u.line())
			sb.vmLine(p, "boots: hint: %s", u.hint)
			return
		}
		switch str("msg") {
		case "dhcp reply":
			file := str("boot_file")
			if file == "" {
				file = "no boot file"
			}
			sb.vmLine(p, "boots: DHCP %s %s, %s (%s)", str("reply"), str("ip"), file, str("decision"))
			if strings.HasSuffix(file, "auto.ipxe") {
				p.mark("netboot: DHCP answered")
			}
		case "http: auto.ipxe", "http: ipxe script served":
			if s := str("script"); s != "" {
				sb.vmLine(p, "boots: iPXE script %q served", s)
				switch s {
				case "osie":
					p.mark("netboot: OSIE script served")
				case "auto":
					p.mark(stepAuto)
				}
			}
		case "boot event":
			sb.vmLine(p, "boots: boot event %s", str("event"))
			switch str("event") {
			case "kernel_fetched":
				p.mark(stepKernel)
			case "initrd_fetched":
				p.mark(stepInitrd)
			}
		case "tftp: sent":
			sb.vmLine(p, "boots: TFTP sent %s", str("file"))
		}
	})
}

// progressFor finds the machine a boots log line is about, by MAC (its
// NIC on herd's network or, OVH, the provider's), then by address (a
// "remote" may carry a port); with one machine, it is that one.
func progressFor(ps []*progress, mac, ip, remote string) *progress {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		remote = h
	}
	bare := func(s string) string { return strings.ToLower(strings.NewReplacer(":", "", "-", "").Replace(s)) }
	for _, p := range ps {
		if mac != "" && (bare(mac) == bare(p.m.MAC) || bare(mac) == bare(p.m.ProviderMAC)) {
			return p
		}
		if (ip != "" && ip == p.m.IP) || (remote != "" && remote == p.m.IP) {
			return p
		}
	}
	if len(ps) == 1 {
		return ps[0]
	}
	return nil
}

// followWorkflow runs `herd workflow watch` in the namespace and prints
// each report. Netboot is herd-server's to switch (the workflow toggles
// it): allow_pxe on at creation, off in the transaction that records the
// workflow's SUCCESS, so the VM's next boot, after the reboot action, is
// from its disk; the server's netboot notes come with the events.
func (sb *sandbox) followWorkflow(ctx context.Context, wfID string, env []string, p *progress) error {
	full := []string{"nsenter", "--net=" + nsPath(), "--", filepath.Join(sb.opts.repo, "bin", "herd"), "workflow", "watch", wfID, "-o", "json", "--timeout", "0"}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		e, err := parseEvent(sc.Text())
		if err != nil {
			continue
		}
		p.mu.Lock()
		p.events = append(p.events, e)
		p.mu.Unlock()
		if bmcNote(e) {
			// The power steps (--power ipmi); the summary shows them too.
			sb.vmLine(p, "power: %s", firstLine(e.Message))
			continue
		}
		if bootNote(e) {
			// No action, no state: a line of the timeline.
			sb.vmLine(p, "timeline: %s", firstLine(e.Message))
			continue
		}
		line := fmt.Sprintf("workflow: %-18s %-8s", e.Action, e.State)
		if finalState(e.State) {
			line += " " + strconv.FormatInt(int64(e.Seconds), 10) + "s"
		}
		if e.Message != "" {
			msg := e.Message
			if len(msg) > 160 {
				msg = msg[:160] + "…"
			}
			line += "  " + strings.ReplaceAll(msg, "\n", " | ")
		}
		sb.vmLine(p, "%s", line)
		// "netboot" events are herd-server's switches of allow_pxe; the
		// first action report means the OSIE is up and its worker running.
		if netbootNote(e) {
			if e.State == "SUCCESS" {
				p.mark("herd-server switched netboot off")
			}
			continue
		}
		p.mark("worker reported (workflow running)")
	}
	werr := cmd.Wait()
	state := ""
	p.mu.Lock()
	if acts := actionEvents(p.events); len(acts) > 0 {
		// The workflow's state is its last action's once that one ended.
		last := acts[len(acts)-1]
		if finalState(last.State) {
			state = last.State
			if state == "SUCCESS" && !allActionsSucceeded(p.events) {
				state = "RUNNING"
			}
		}
	}
	p.mu.Unlock()
	if werr == nil {
		state = "SUCCESS"
	} else if ee, ok := werr.(*exec.ExitError); ok {
		switch ee.ExitCode() {
		case 3:
			state = "FAILED"
		case 4:
			state = "TIMEOUT"
		}
	}
	if state != "" {
		p.mu.Lock()
		p.wfState = state
		p.mu.Unlock()
		p.mark("workflow " + state)
		sb.vmLine(p, "workflow %s %s", wfID, state)
	}
	if werr != nil && ctx.Err() == nil && state == "" {
		return fmt.Errorf("herd workflow watch: %w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func allActionsSucceeded(evs []event) bool {
	for _, a := range actionTimes(evs) {
		// "boot" holds herd-boots' netboot notes, not an action.
		if a.State != "SUCCESS" && a.Name != "boot" {
			return false
		}
	}
	return true
}

// tail calls line for each line appended to path, from its start, until
// ctx ends (polling: the writer may not have created it yet).
func tail(ctx context.Context, path string, line func(string)) { tailFrom(ctx, path, false, line) }

// tailFrom is tail; fromEnd skips what the file holds already.
func tailFrom(ctx context.Context, path string, fromEnd bool, line func(string)) {
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			f = nil
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	defer f.Close()
	if fromEnd {
		_, _ = f.Seek(0, io.SeekEnd)
	}
	r := bufio.NewReader(f)
	var partial string
	for {
		s, err := r.ReadString('\n')
		partial += s
		if err == nil {
			line(strings.TrimRight(partial, "\r\n"))
			partial = ""
			continue
		}
		select {
		case <-ctx.Done():
			// Whatever was written meanwhile.
			for {
				s, err := r.ReadString('\n')
				partial += s
				if partial != "" && (err == nil || s == "") {
					line(strings.TrimRight(partial, "\r\n"))
					partial = ""
				}
				if err != nil {
					return
				}
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func credential(uid, gid int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}

func orNone(s string) string {
	if s == "" {
		return "without a final state"
	}
	return s
}
