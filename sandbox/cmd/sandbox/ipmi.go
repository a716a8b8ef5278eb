package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// --power ipmi: the sandbox does not start the VMs itself. Each machine
// gets a BMC, OpenIPMI's ipmi_sim, on the namespace's BMC network; its
// chassis_control program starts the VM with the sandbox's own QEMU
// command line (plus QEMU's ipmi-bmc-extern device wired to the
// simulator) and stops it. herd-bmc reaches the simulators over IPMI LAN,
// and `herd workflow create --netboot` has herd switch the VMs on.

const (
	powerQEMU = "qemu"
	powerIPMI = "ipmi"
)

// The BMC network: a veth pair in the namespace, herd-bmc's side bmc0 and
// the BMCs' side bmc1 (each simulator its own address there).
const (
	bmcLink       = "bmc0"
	bmcPeer       = "bmc1"
	bmcNetIP      = "10.87.0.1"
	bmcPort       = 623
	bmcUser       = "herd"
	bmcCredential = "sandbox-ipmi"
	// The simulators' VM channels (QEMU's ipmi-bmc-extern connects there)
	// are on the namespace's loopback, one port per machine.
	bmcVMPortBase = 9100
)

func bmcIP(n int) string { return fmt.Sprintf("10.87.0.%d", 49+n) }

// bmcDir is machine n's simulator directory: its configuration, state,
// chassis_control program and the VM's QEMU output.
func (sb *sandbox) bmcDir(n int) string { return filepath.Join(sb.dir, "bmc", strconv.Itoa(n)) }

// qemuPidFile is where a machine's VM pid is recorded in the format down
// reads (pid, program), whoever started the VM.
func (sb *sandbox) qemuPidFile(n int) string {
	return filepath.Join(sb.dir, "pids", fmt.Sprintf("90-qemu-%d.pid", n))
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// chassisScript is ipmi_sim's chassis_control program for one VM: "get
// power|boot", "set power 0|1", "set reset 1", "set boot DEVICE". ipmi_sim
// refuses Set System Boot Options unless such a program keeps the boot
// device, and then the program owns power too. The boot device is kept
// for the BMC's answers only: the VM's command line always has the NIC
// first (bootindex), and herd's allow_pxe decides whether iPXE boots the
// OSIE or leaves the disk to the firmware, as with --power qemu. It only
// ever signals the QEMU it recorded itself.
func chassisScript(dir, pidFile string, qemu []string) string {
	var cmd []string
	for _, a := range qemu {
		cmd = append(cmd, shellQuote(a))
	}
	return `#!/bin/sh
# ipmi_sim's chassis_control for one sandbox VM (written by the sandbox).
dir=` + shellQuote(dir) + `
pidfile=` + shellQuote(pidFile) + `
alive() {
	[ -s "$pidfile" ] || return 1
	pid=$(sed -n 1p "$pidfile")
	[ "$(readlink "/proc/$pid/exe")" = "$(sed -n 2p "$pidfile")" ] || return 1
	st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || return 1
	[ "${st%% *}" != Z ]
}
start() {
	rm -f "$dir/qemu.pid"
	echo "$(date -u +%FT%T.%NZ) power on" >>"$dir/qemu.log"
	` + strings.Join(cmd, " ") + ` \
		-daemonize -pidfile "$dir/qemu.pid" >>"$dir/qemu.log" 2>&1 || return 1
	pid=$(cat "$dir/qemu.pid")
	printf '%s\n%s\n' "$pid" "$(readlink "/proc/$pid/exe")" >"$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
}
stop() {
	alive || return 0
	echo "$(date -u +%FT%T.%NZ) power off" >>"$dir/qemu.log"
	kill "$(sed -n 1p "$pidfile")"
	i=0; while alive && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
	alive && kill -9 "$(sed -n 1p "$pidfile")"
	rm -f "$pidfile"
}
op=$1; shift
case $op in
get)
	for p in "$@"; do
		case $p in
		power) if alive; then echo power:1; else echo power:0; fi ;;
		boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		p=$1; v=$2; shift 2
		echo "$(date -u +%FT%T.%NZ) set $p $v" >>"$dir/chassis.log"
		case $p in
		boot) echo "$v" >"$dir/boot" ;;
		power) if [ "$v" = 1 ]; then alive || start; else stop; fi ;;
		reset) stop; start ;;
		esac
	done ;;
esac
`
}

// lanConf is ipmi_sim's configuration: IPMI LAN on addr:port (MD5
// authentication, RMCP+ too), the VM's channel on the namespace's
// loopback, the chassis program, one admin user.
func lanConf(addr string, vmPort int, chassis, user, password string) string {
	return fmt.Sprintf(`name "herd-sandbox"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 %d codec VM
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 md5
`, addr, bmcPort, vmPort, chassis, user, password)
}

// The simulated BMC itself: one management controller at 0x20.
const simEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
`

// ipmiVMArgs are the sandbox's QEMU command line plus the BMC device:
// ipmi-bmc-extern over a chardev to the simulator, behind a KCS interface.
func ipmiVMArgs(base []string, vmPort int) []string {
	return append(append([]string(nil), base...),
		"-chardev", fmt.Sprintf("socket,id=ipmi0,host=127.0.0.1,port=%d,reconnect=1", vmPort),
		"-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
		"-device", "isa-ipmi-kcs,bmc=bmc0")
}

// startBMCs writes each machine's simulator files, starts the
// simulators in the namespace and waits until each answers ipmitool.
func (sb *sandbox) startBMCs(ctx context.Context, ms []machine, password string) error {
	ipmiSim, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return fmt.Errorf("ipmi_sim (Debian package openipmi; make deps): %w", err)
	}
	if _, err := exec.LookPath("ipmitool"); err != nil {
		return fmt.Errorf("ipmitool (Debian package ipmitool; make deps): %w", err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return fmt.Errorf("qemu-system-x86_64 (Debian package qemu-system-x86; make deps): %w", err)
	}
	for _, m := range ms {
		dir := sb.bmcDir(m.N)
		if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
			return err
		}
		if err := sb.prepareVMFiles(m); err != nil {
			return err
		}
		vmPort := bmcVMPortBase + m.N
		args := ipmiVMArgs(qemuArgs(qemu, m, sb.vmFiles(m), sb.opts.memMiB, sb.opts.smp), vmPort)
		chassis := filepath.Join(dir, "chassis.sh")
		for name, body := range map[string]string{
			"chassis.sh": chassisScript(dir, sb.qemuPidFile(m.N), args),
			"lan.conf":   lanConf(m.BMCIP, vmPort, chassis, bmcUser, password),
			"sim.emu":    simEmu,
		} {
			mode := os.FileMode(0o600)
			if name == "chassis.sh" {
				mode = 0o700
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), mode); err != nil {
				return err
			}
		}
		sb.stage("%sBMC: ipmi_sim on %s:%d (IPMI LAN), its chassis_control starts and stops the VM (files: %s)",
			machineLabel(ms, m), m.BMCIP, bmcPort, dir)
		// -n: no console on stdin (the simulator outlives the sandbox
		// until sandbox-down; it would end at its stdin's end).
		p, err := sb.startProc(spec{name: fmt.Sprintf("ipmi_sim-%d", m.N), netns: nsName, order: 80, dir: dir,
			args: []string{ipmiSim, "-n", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", filepath.Join(dir, "state")}})
		if err != nil {
			return err
		}
		var out string
		deadline := time.Now().Add(15 * time.Second)
		for {
			if out, err = sb.ipmitool(ctx, m, password, "chassis", "power", "status"); err == nil {
				break
			}
			if p.exited() || time.Now().After(deadline) {
				return sb.withLog(fmt.Errorf("ipmi_sim on %s:%d does not answer ipmitool: %w", m.BMCIP, bmcPort, err), fmt.Sprintf("ipmi_sim-%d", m.N))
			}
			time.Sleep(200 * time.Millisecond)
		}
		sb.say("$ ipmitool -I lanplus -H %s -U %s chassis power status: %s", m.BMCIP, bmcUser, out)
	}
	return nil
}

func machineLabel(ms []machine, m machine) string {
	if len(ms) > 1 {
		return fmt.Sprintf("vm%d: ", m.N)
	}
	return ""
}

// ipmitool runs the real IPMI client in the namespace against m's BMC
// (the password from the environment, -E, not the command line) and
// returns its trimmed output. -C 3: without a cipher suite ipmitool asks
// for the list first in a form ipmi_sim drops, and waits.
func (sb *sandbox) ipmitool(ctx context.Context, m machine, password string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	full := append([]string{"--net=" + nsPath(), "--", "ipmitool", "-I", "lanplus", "-C", "3", "-N", "1", "-R", "2",
		"-H", m.BMCIP, "-p", strconv.Itoa(bmcPort), "-U", bmcUser, "-E"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+password)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("ipmitool %s: %w: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

// bmcVM follows a VM its BMC started: it waits for the pid the chassis
// program recorded, then polls it; done closes when the VM has ended.
type bmcVM struct {
	pf   pidFile
	done chan struct{}
}

// waitBMCVM waits up to within for machine n's VM to be running and
// returns it, with the time the chassis program recorded it.
func (sb *sandbox) waitBMCVM(ctx context.Context, n int, within time.Duration) (*bmcVM, time.Time, error) {
	path := sb.qemuPidFile(n)
	deadline := time.Now().Add(within)
	for {
		if b, err := os.ReadFile(path); err == nil {
			if pf, ok := parsePidFile(string(b)); ok && pf.alive() {
				st, _ := os.Stat(path)
				v := &bmcVM{pf: pf, done: make(chan struct{})}
				go func() {
					defer close(v.done)
					for v.pf.alive() && !zombie(v.pf.pid) {
						time.Sleep(200 * time.Millisecond)
					}
				}()
				return v, st.ModTime(), nil
			}
		}
		if time.Now().After(deadline) {
			return nil, time.Time{}, fmt.Errorf("no VM running %s after its BMC's netboot: see %s", within, filepath.Join(sb.bmcDir(n), "qemu.log"))
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// netbootWorkflow creates machine m's workflow with --netboot: herd-server
// queues a netboot job, herd-bmc sets the next boot to the network and
// powers the VM on through its BMC; the CLI follows the job to its end.
func (sb *sandbox) netbootWorkflow(ctx context.Context, m machine, clientEnv []string) (string, error) {
	out, err := sb.herd(ctx, clientEnv, "", "workflow", "create", "-t", "sandbox-install", "-r", fmt.Sprintf(`{"device_1":%q}`, m.MAC), "--netboot")
	id := createdWorkflowID(out)
	if err != nil {
		return id, err
	}
	if id == "" {
		return "", fmt.Errorf("herd workflow create printed no workflow id: %q", out)
	}
	return id, nil
}

// createdWorkflowID reads the id from `herd workflow create`'s output
// ("Created Workflow: ID", then with --netboot the job's lines).
func createdWorkflowID(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(l), "Created Workflow:"); ok {
			return strings.TrimSpace(id)
		}
	}
	return ""
}

// bmcNote tells herd-server's events of a workflow's BMC jobs (task
// "bmc": "bmc netboot RUNNING (attempt 1)") from action reports.
func bmcNote(e event) bool { return e.Task == "bmc" }

// powerVerdict checks what the summary shows of the power steps: the
// workflow's events hold a netboot job that ended SUCCESS, and ipmitool
// saw the VM on after it and off at the end.
func powerVerdict(steps []event, onAfterNetboot, offAtEnd string) error {
	var errs []error
	ok := false
	for _, e := range steps {
		if e.Action == "netboot" && e.State == "SUCCESS" {
			ok = true
		}
	}
	if !ok {
		errs = append(errs, errors.New("no bmc netboot SUCCESS in the workflow's events"))
	}
	if !strings.Contains(onAfterNetboot, "Chassis Power is on") {
		errs = append(errs, fmt.Errorf("ipmitool after the netboot: %q, want Chassis Power is on", onAfterNetboot))
	}
	if !strings.Contains(offAtEnd, "Chassis Power is off") {
		errs = append(errs, fmt.Errorf("ipmitool at the end: %q, want Chassis Power is off", offAtEnd))
	}
	return errors.Join(errs...)
}
