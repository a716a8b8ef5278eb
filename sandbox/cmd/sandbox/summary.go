package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// checkDisk compares the VM's disk with the image up to the end of the
// boot partition (MBR, boot loader, kernel, initramfs: what nothing writes
// after image2disk; the root partition holds writefile's /etc/hostname).
func checkDisk(disk, image, layout string) (string, bool) {
	end, err := bootEnd(layout)
	if err != nil {
		return err.Error(), false
	}
	a, err := prefixSHA256(disk, end)
	if err != nil {
		return err.Error(), false
	}
	b, err := prefixSHA256(image, end)
	if err != nil {
		return err.Error(), false
	}
	if a != b {
		return fmt.Sprintf("first %d bytes differ from the image (sha256 %s, image %s)", end, a[:16], b[:16]), false
	}
	return fmt.Sprintf("first %d bytes (MBR + boot partition) match disk.img, sha256 %s", end, a[:16]), true
}

// bootEnd reads layout.env's BOOT_OFFSET + BOOT_SIZE.
func bootEnd(layout string) (int64, error) {
	b, err := os.ReadFile(layout)
	if err != nil {
		return 0, err
	}
	v := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, val, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64); err == nil {
			v[k] = n
		}
	}
	if v["BOOT_SIZE"] <= 0 {
		return 0, fmt.Errorf("%s: no BOOT_OFFSET/BOOT_SIZE", layout)
	}
	return v["BOOT_OFFSET"] + v["BOOT_SIZE"], nil
}

func prefixSHA256(path string, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	got, err := io.Copy(h, io.LimitReader(f, n))
	if err != nil {
		return "", err
	}
	if got != n {
		return "", fmt.Errorf("%s: %d bytes, want at least %d", path, got, n)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// summary prints one machine's outcome and returns its verdict.
func (sb *sandbox) summary(wfID string, p *progress) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	sb.outMu.Lock()
	defer sb.outMu.Unlock()
	m, f, w := p.m, sb.vmFiles(p.m), sb.out
	fmt.Fprintf(w, "\n==================== herd sandbox: machine %d ====================\n", m.N)
	state := p.wfState
	if state == "" {
		state = "not finished"
	}
	fmt.Fprintf(w, "workflow   %s  %s\n", wfID, state)
	fmt.Fprintf(w, "machine    %s  MAC %s  IP %s  hostname %s\n", m.ID, m.MAC, m.IP, m.Hostname)
	fmt.Fprintf(w, "firmware   %s\n", m.firmware())
	acts := actionTimes(p.events)
	if len(acts) > 0 {
		fmt.Fprintf(w, "actions\n")
		for _, a := range acts {
			if a.Name == "boot" {
				continue // herd-boots' netboot notes, in the timeline
			}
			fmt.Fprintf(w, "  %-18s %-8s %7s", a.Name, a.State, fmtDur(a.duration()))
			if a.State != "SUCCESS" && a.Message != "" {
				fmt.Fprintf(w, "  %s", firstLine(a.Message))
			}
			fmt.Fprintln(w)
		}
	}
	powerOK := true
	if sb.opts.power == powerIPMI {
		powerOK = sb.powerSummary(w, p)
	}
	faultOK := true
	if sb.opts.fault != "" {
		faultOK = sb.faultSummary(w, p)
	}
	replicasOK := true
	if sb.opts.serverReplicas > 1 {
		replicasOK = sb.replicasSummary(w, f.console)
	}
	fmt.Fprintf(w, "timeline (since power-on)\n")
	for _, ms := range p.milestones {
		fmt.Fprintf(w, "  %7s  %s\n", fmtDur(ms.at.Sub(p.powerOn)), ms.name)
	}
	md, file, reported := markerHostname(p.marker)
	okHost := reported && md == m.Hostname && file == m.Hostname
	diskMsg, okDisk := checkDisk(f.disk, filepath.Join(sb.opts.repo, "bin", "osimage", "disk.img"), filepath.Join(sb.opts.repo, "bin", "osimage", "layout.env"))
	fmt.Fprintf(w, "disk       %s\n", diskMsg)
	if reported {
		fmt.Fprintf(w, "installed  %s\n", p.marker)
	} else {
		fmt.Fprintf(w, "installed  the installed OS printed no herd-installed-os line\n")
	}
	ok := p.wfState == "SUCCESS" && okHost && okDisk && powerOK && faultOK && replicasOK
	fmt.Fprintf(w, "total      power-on to provisioned (installed OS reported): %s\n", fmtDur(provisionedIn(p)))
	fmt.Fprintf(w, "console    %s\n", f.console)
	if ok {
		fmt.Fprintf(w, "result     PROVISIONED: %s runs the installed OS and reported hostname=%s\n", m.ID, m.Hostname)
	} else {
		// Where it stopped and what usually causes that (diagnose.go).
		for _, l := range diagnosisLines(diagnose(sb.diagInputOf(p))) {
			fmt.Fprintln(w, l)
		}
		fmt.Fprintf(w, "result     NOT PROVISIONED (want workflow SUCCESS, the image on disk, and hostname=%s from the installed OS)\n", m.Hostname)
	}
	return ok
}

// powerSummary prints how herd switched the VM on (--power ipmi): the
// BMC job's steps from the workflow's events, timed from power-on, and
// ipmitool's view; it returns whether they show what they must.
func (sb *sandbox) powerSummary(w io.Writer, p *progress) bool {
	var steps []event
	for _, e := range p.events {
		if bmcNote(e) {
			steps = append(steps, e)
		}
	}
	fmt.Fprintf(w, "power      by herd through the VM's BMC (ipmi_sim, %s:%d), from the workflow's events (time from power-on)\n", p.m.BMCIP, bmcPort)
	for _, e := range steps {
		fmt.Fprintf(w, "  %+7.1fs  %s\n", e.CreatedAt.Sub(p.powerOn).Seconds(), firstLine(e.Message))
	}
	fmt.Fprintf(w, "ipmitool   after the netboot: %s; at the end: %s\n", orUnchecked(p.ipmiOn), orUnchecked(p.ipmiOff))
	if err := powerVerdict(steps, p.ipmiOn, p.ipmiOff); err != nil {
		fmt.Fprintf(w, "power      %v\n", err)
		return false
	}
	return true
}

func orUnchecked(s string) string {
	if s == "" {
		return "not checked"
	}
	return s
}

// provisionedIn is power-on to the installed OS' report, or -1.
func provisionedIn(p *progress) time.Duration {
	for _, ms := range p.milestones {
		if ms.name == "installed OS reported" {
			return ms.at.Sub(p.powerOn)
		}
	}
	return -1
}

// verdict ends the run's output: one line for all machines. provisioned
// holds each machine's own verdict.
func (sb *sandbox) verdict(ps []*progress, provisioned []bool, ok bool) {
	w := sb.out
	fmt.Fprintf(w, "\n==================== herd sandbox summary ====================\n")
	var slowest time.Duration
	done := 0
	for i, p := range ps {
		p.mu.Lock()
		d := provisionedIn(p)
		p.mu.Unlock()
		if provisioned[i] {
			done++
			slowest = max(slowest, d)
		}
	}
	fmt.Fprintf(w, "variant    %s, %d machine(s)\n", ps[0].m.firmware(), len(ps))
	fmt.Fprintf(w, "machines   %d of %d provisioned; slowest power-on to installed OS: %s\n", done, len(ps), fmtDur(slowest))
	fmt.Fprintf(w, "logs       %s/logs/  consoles %s/%s/N/console.log\n", sb.dir, sb.dir, vmDirName)
	if ok {
		fmt.Fprintf(w, "result     PROVISIONED\n")
	} else {
		fmt.Fprintf(w, "result     NOT PROVISIONED\n")
	}
	if !sb.opts.downAfter {
		fmt.Fprintf(w, "services   still running in namespace %s; make sandbox-down removes everything\n", nsName)
	}
	fmt.Fprintf(w, "===============================================================\n")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
