package main

import (
	"fmt"
	"strings"
	"time"
)

// When a machine does not come: the boot steps the sandbox sees, what it
// prints when a machine stops at one (the run's timeout, auto.ipxe giving
// up, or no new step for a while), and herd-boots' unknown-caller
// warnings it shows as they happen.

// The milestones vm.go and provider.go mark, by name, that the diagnosis
// reads.
const (
	stepProviderScript = "provider: iPXE script sent"
	stepDHCP           = "netboot: DHCP answered"
	stepAuto           = "netboot: auto.ipxe served"
	stepOSIEScript     = "netboot: OSIE script served"
	stepKernel         = "netboot: kernel fetched"
	stepInitrd         = "netboot: initrd fetched"
	stepOSIEKernel     = "OSIE kernel started"
	stepInit           = "OSIE init started"
	stepLease          = "OSIE leased its address"
	stepDocker         = "OSIE: docker ready"
	stepWorker         = "OSIE: herd-worker started"
	stepReported       = "worker reported (workflow running)"
	stepSuccess        = "workflow SUCCESS"
	stepDiskKernel     = "installed OS kernel started"
	stepInstalled      = "installed OS reported"
	// Not steps in the order: what stops a netboot.
	stepUnknown = "netboot: unknown caller"
	stepGaveUp  = "netboot: auto.ipxe gave up"
)

// bootStep is a step in the order a machine passes them, with what the
// sandbox waits for when it is the next one and what usually keeps a
// machine from it.
type bootStep struct {
	name, awaited, hint string
	ovhOnly             bool
}

var bootSteps = []bootStep{
	{stepProviderScript, "the provider's DHCP answer and iPXE script (dnsmasq)",
		"the firmware did not netboot from net0, or the provider's dnsmasq did not answer it: see logs/provider-dnsmasq.log and the console", true},
	{stepDHCP, "herd-boots' DHCP answer with auto.ipxe",
		"herd-boots never answered this machine's DHCP with auto.ipxe: the NIC must be on herd's bridge with the hardware record's MAC, " +
			"allow_pxe true, and herd-boots must serve that network (--dhcp-interface, --dhcp-mode); on OVH the provider script's " +
			"`dhcp net1` must name the NIC on herd's network. logs/herd-boots.log has a line per DHCP packet", false},
	{stepAuto, "iPXE fetching auto.ipxe from herd-boots",
		"iPXE had herd's DHCP answer but auto.ipxe never reached herd-boots from this machine: iPXE routes by its routing table, so " +
			"with the provider's NIC still open the request may leave from it (the provider script must `ifclose net0` first), " +
			"or herd-boots' HTTP is not reachable (--http-addr, --http-public-url)", false},
	{stepOSIEScript, "herd-boots serving this machine's OSIE script",
		"auto.ipxe never got this machine's script: see the console for the HTTP errors, and logs/herd-boots.log", false},
	{stepKernel, "iPXE fetching the OSIE kernel",
		"iPXE did not fetch the OSIE kernel: check --osie-dir / --osie-url and --osie-kernel; the console shows the HTTP error", false},
	{stepInitrd, "iPXE fetching the OSIE initramfs",
		"iPXE did not fetch the OSIE initramfs: check --osie-initrd; the console shows the HTTP error", false},
	{stepOSIEKernel, "the OSIE kernel starting",
		"iPXE loaded the kernel and the initramfs but the kernel printed nothing: console= must be the VM's serial port (ttyS0), " +
			"and under UEFI the kernel must have an EFI stub", false},
	{stepInit, "the OSIE's init starting",
		"the kernel did not run the OSIE's init: see the console for a panic (initramfs too big for --memory?)", false},
	{stepLease, "the OSIE's DHCP lease",
		"the OSIE got no lease on its boot NIC: herd.mac= must be the NIC on herd's network, its driver must load (herd.modules=), " +
			"and herd-boots must answer it", false},
	{stepDocker, "dockerd in the OSIE",
		"dockerd did not come up in the OSIE: see the console (storage driver, memory)", false},
	{stepWorker, "herd-worker starting in the OSIE",
		"the OSIE's init did not start herd-worker: see the console", false},
	{stepReported, "herd-worker's first report",
		"herd-worker started but never reported: it cannot reach herd-server's gRPC (grpc_authority=), its CA (grpc_cert_url=), " +
			"or herd-server refused its token; see logs/herd-server.log and the console", false},
	{stepSuccess, "the workflow's success",
		"the workflow did not end: see `herd workflow logs` for the action's output; an action's image is pulled from " +
			"docker_registry= (with registry_username= / registry_password= when it wants a login)", false},
	{stepDiskKernel, "the installed OS booting from its disk",
		"the workflow succeeded but the VM did not boot its disk: netboot must be off for it (allow_pxe=false) " +
			"and the disk must hold the image's boot loader; see the console", false},
	{stepInstalled, "the installed OS reporting its host name",
		"the installed OS did not report: its first-boot program could not reach herd-metadata; see the console", false},
}

// unknownCaller is herd-boots' warning about a request it could not
// identify, as its JSON log line says.
type unknownCaller struct {
	mac, remote, iface, reason, hint string
	knownIface, knownMAC             string
	// count is the requests it stands for: the lines seen and those
	// herd-boots held back.
	count int
}

// unknownFromLog reads an unknown-caller line of herd-boots' JSON log.
func unknownFromLog(l map[string]any) (unknownCaller, bool) {
	str := func(k string) string { s, _ := l[k].(string); return s }
	if m := str("msg"); m != "http: script for an unknown caller" && m != "http: boot event from an unknown caller" {
		return unknownCaller{}, false
	}
	u := unknownCaller{mac: str("mac"), remote: str("remote"), iface: str("iface"), reason: str("reason"), hint: str("hint"),
		knownIface: str("known_iface"), knownMAC: str("known_mac"), count: 1}
	if n, ok := l["suppressed"].(float64); ok && n > 0 {
		u.count += int(n)
	}
	return u, true
}

// line is the live line for u.
func (u unknownCaller) line() string {
	s := fmt.Sprintf("boots: WARNING unknown caller: MAC %s from %s, interface %s (%s)", orDash(u.mac), orDash(u.remote), orDash(u.iface), u.reason)
	if u.count > 1 {
		s += fmt.Sprintf(", %d requests", u.count)
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// diagInput is what the sandbox saw of one machine.
type diagInput struct {
	ovh     bool
	seen    map[string]time.Duration // milestone → since power-on
	unknown *unknownCaller           // herd-boots' last warning about it
	actions []actionTime
	wfState string
}

// diagnosis says where a machine stopped and what usually causes that.
type diagnosis struct {
	last    string        // the furthest step seen; "" for none
	at      time.Duration // when, since power-on
	missing string        // what never came
	hint    string        // "" when provisioned
}

// diagnose finds the furthest boot step seen and the hint for the next.
// herd-boots not knowing the machine, auto.ipxe giving up and a workflow
// that ended otherwise than SUCCESS take the hint over.
func diagnose(in diagInput) diagnosis {
	var steps []bootStep
	for _, s := range bootSteps {
		if !s.ovhOnly || in.ovh {
			steps = append(steps, s)
		}
	}
	var d diagnosis
	last := -1
	for i, s := range steps {
		if at, ok := in.seen[s.name]; ok {
			last, d.last, d.at = i, s.name, at
		}
	}
	if last == len(steps)-1 {
		return d // provisioned
	}
	d.missing, d.hint = steps[last+1].awaited, steps[last+1].hint
	_, served := in.seen[stepOSIEScript]
	_, gaveUp := in.seen[stepGaveUp]
	switch {
	case in.unknown != nil && !served:
		u := in.unknown
		d.missing = stepNamed(stepOSIEScript).awaited
		d.hint = fmt.Sprintf("herd-boots did not know the caller: MAC %s from %s (interface %s, %s): %s. "+
			"iPXE routes by its routing table: unless the provider script does `ifclose net0` and `set iface net1` before chaining "+
			"auto.ipxe, the provider NIC's default route wins and requests leave from net0 with net0's MAC, which herd does not know",
			orDash(u.mac), orDash(u.remote), orDash(u.iface), u.reason, strings.TrimSuffix(u.hint, "."))
	case gaveUp && !served:
		d.missing = stepNamed(stepOSIEScript).awaited
		d.hint = "auto.ipxe tried to fetch its machine script and gave up: see the console for the HTTP errors; " + stepNamed(stepAuto).hint
	case in.wfState != "" && in.wfState != "SUCCESS":
		d.last, d.missing = "workflow "+in.wfState, stepNamed(stepSuccess).awaited
		d.hint = "the workflow ended " + in.wfState
		if a, ok := lastAction(in.actions); ok {
			d.hint += fmt.Sprintf(": action %s %s", a.Name, a.State)
			if a.Message != "" {
				d.hint += " (" + firstLine(a.Message) + ")"
			}
		}
		d.hint += "; `herd workflow logs` has the actions' output"
	case d.last == stepReported:
		if a, ok := lastAction(in.actions); ok && !finalState(a.State) {
			d.hint = fmt.Sprintf("action %s was still %s: ", a.Name, a.State) + d.hint
		}
	}
	return d
}

func stepNamed(name string) bootStep {
	for _, s := range bootSteps {
		if s.name == name {
			return s
		}
	}
	return bootStep{awaited: name}
}

// lastAction is the last action that reported, herd-boots' "boot" notes
// aside.
func lastAction(as []actionTime) (actionTime, bool) {
	for i := len(as) - 1; i >= 0; i-- {
		if as[i].Name != "boot" {
			return as[i], true
		}
	}
	return actionTime{}, false
}

// diagInputOf is what p saw; the caller holds p.mu.
func (sb *sandbox) diagInputOf(p *progress) diagInput {
	in := diagInput{ovh: p.m.ProviderMAC != "", seen: map[string]time.Duration{}, wfState: p.wfState,
		actions: actionTimes(p.events)}
	for _, m := range p.milestones {
		in.seen[m.name] = m.at.Sub(p.powerOn)
	}
	if p.unknown != nil {
		u := *p.unknown
		in.unknown = &u
	}
	return in
}

// diagnosisLines are the diagnosis as the summary and the live view
// print it; none when the machine was provisioned.
func diagnosisLines(d diagnosis) []string {
	if d.hint == "" {
		return nil
	}
	last := "nothing after power-on"
	if d.last != "" {
		last = fmt.Sprintf("%s (%s after power-on)", d.last, fmtDur(d.at))
	}
	return []string{"last step  " + last, "never saw  " + d.missing, "hint       " + d.hint}
}

// printDiagnosis prints p's diagnosis as live lines.
func (sb *sandbox) printDiagnosis(p *progress) {
	p.mu.Lock()
	d := diagnose(sb.diagInputOf(p))
	p.mu.Unlock()
	for _, l := range diagnosisLines(d) {
		sb.vmLine(p, "%s", l)
	}
}

// stallAfter is how long the live view waits for a machine's next step
// before it says where the machine stands.
const stallAfter = 3 * time.Minute

// watchState is what watch remembers between its calls.
type watchState struct {
	noticed string // the last step a stall was reported at
}

// stall decides the watchdog's action for a machine whose latest step is
// last (since: when it came, or power-on) at now: whether to print a
// stall notice, and, when the machine cannot get any further, why.
func stall(seen map[string]time.Duration, last string, since, now time.Duration, noticed string) (notice bool, stop string) {
	if last == stepInstalled {
		return false, ""
	}
	_, served := seen[stepOSIEScript]
	if _, gaveUp := seen[stepGaveUp]; gaveUp && !served {
		// The firmware goes on to its next boot device and, after the
		// disk (empty), netboots again into the same failure.
		return false, "auto.ipxe gave up without this machine's script"
	}
	return now-since >= stallAfter && noticed != last, ""
}

// watch runs every few seconds while p's VM runs: it prints a stall
// notice with the diagnosis once per step a machine sits at, and returns
// why to stop when the machine cannot get further.
func (sb *sandbox) watch(p *progress, w *watchState) (stop string) {
	p.mu.Lock()
	in := sb.diagInputOf(p)
	last, since := "", time.Duration(0)
	for _, m := range p.milestones {
		if at := m.at.Sub(p.powerOn); at >= since {
			last, since = m.name, at
		}
	}
	now := time.Since(p.powerOn)
	p.mu.Unlock()
	notice, stop := stall(in.seen, last, since, now, w.noticed)
	if notice {
		w.noticed = last
		sb.vmLine(p, "no new boot step for %s", fmtDur(now-since))
		for _, l := range diagnosisLines(diagnose(in)) {
			sb.vmLine(p, "%s", l)
		}
	}
	return stop
}
