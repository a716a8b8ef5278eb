// Command sandbox provisions a QEMU virtual machine end to end with every
// herd service, on a private network, in one command:
//
//	sandbox up     build, start the services in a network namespace, push
//	               the machine, its template and workflow, power the VM on,
//	               follow it until its installed OS reports, summarise
//	sandbox down   stop what up started (by pid file), delete the
//	               namespace and the state directory
//
// Everything lives in the state directory (--dir) and the namespace
// (--netns, default herd-sbx: bridge br0 10.88.0.1/24, a tap per VM; with
// --ovh also the provider's bridge br1 10.89.0.1/24). Run as root. See
// sandbox/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	repo, dir, hostname string
	build, downAfter    bool
	timeout             time.Duration
	memMiB, diskMiB     int
	smp                 int
	// The variants: OVMF instead of SeaBIOS, the OVH two-NIC boot, and
	// how many VMs at once.
	uefi, ovh bool
	machines  int
	netns     string
	// stack: how the services start: each a process of the sandbox's
	// (process), or the operator's deploy path, docker-compose (compose).
	stack string
	// power: who switches the VMs on: the sandbox starting QEMU (qemu),
	// or herd through each VM's BMC, an ipmi_sim (ipmi).
	power string
	// fault: what the run does to the machines on the way (fault.go):
	// none, or osie-reboot (each VM reset during faultDuring's actions).
	fault       string
	faultDuring []string
	// serverReplicas: how many herd-server processes share the database
	// and the state directory (replicas.go); every client lists them all.
	serverReplicas int
}

// parseArgs reads the command and its flags and checks them; code is the
// exit code to end with at once, or -1 to go on with cmd.
func parseArgs(args []string, stderr io.Writer) (cmd string, o options, code int) {
	cmd = "up"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sandbox [up|down] [flags]\n\n"+
			"up provisions a QEMU VM through herd-boots, herd-server, herd-metadata and herd-worker\n"+
			"in a network namespace (10.88.0.0/24); down removes everything up made.\nRun as root.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.repo, "repo", envOr("SANDBOX_REPO", "."), "herd's source tree (where the Makefile is) (env SANDBOX_REPO)")
	fs.StringVar(&o.dir, "dir", envOr("SANDBOX_DIR", "/tmp/herd-sandbox"), "state directory: logs, pid files, database, registry, VM disk (env SANDBOX_DIR)")
	fs.StringVar(&o.hostname, "hostname", "herd-sbx-vm%d", "the VMs' host name, served by herd-metadata and written by the workflow; %d is the machine's number")
	fs.BoolVar(&o.uefi, "uefi", os.Getenv("UEFI") == "1", "boot the VMs with OVMF (UEFI) instead of SeaBIOS (env UEFI=1)")
	fs.BoolVar(&o.ovh, "ovh", os.Getenv("OVH") == "1", "the OVH scenario: a provider network first, whose DHCP and iPXE script hand over to herd on the second NIC (env OVH=1)")
	fs.IntVar(&o.machines, "machines", envInt("MACHINES", 1), fmt.Sprintf("how many VMs to provision at once, 1 to %d (env MACHINES)", maxMachines))
	fs.StringVar(&o.stack, "stack", envOr("STACK", stackProcess), "how the services start: process (each a process of the sandbox's) or compose (deploy/generate-envrc.sh, setup.sh, docker-compose up -d, against a private dockerd) (env STACK)")
	fs.StringVar(&o.power, "power", envOr("POWER", powerIPMI), "who switches the VMs on: ipmi (each VM behind an ipmi_sim BMC; herd-bmc powers it on for herd workflow create --netboot) or qemu (the sandbox starts QEMU itself) (env POWER)")
	fs.StringVar(&o.netns, "netns", envOr("SANDBOX_NETNS", defaultNetns), "the network namespace everything runs in (env SANDBOX_NETNS)")
	fs.BoolVar(&o.build, "build", true, "run make build osie osimage first (false: use what bin/ holds); the action images are built into each run's registry either way")
	fs.BoolVar(&o.downAfter, "down", os.Getenv("SANDBOX_DOWN") == "1", "remove everything when done (env SANDBOX_DOWN=1); default: leave the services up to look at")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up when the VM is not provisioned within this time of power-on, saying where each machine stopped and why that usually happens")
	fs.IntVar(&o.memMiB, "memory", 2048, "VM memory in MiB (the OSIE runs in RAM)")
	fs.IntVar(&o.diskMiB, "disk", 256, "VM disk size in MiB")
	// One: under TCG two vCPUs gain little on a small host, and QEMU 7.2's
	// multi-threaded TCG has left the OSIE's kernel in soft lockups (both
	// vCPUs stuck while runc started a container) once in a few runs.
	fs.IntVar(&o.smp, "smp", 1, "VM CPUs")
	fs.IntVar(&o.serverReplicas, "server-replicas", envInt("SERVER_REPLICAS", 1), fmt.Sprintf("herd-server processes on the one database and state directory, 1 to %d, each on ports of its own (gRPC 42113, 42123, ...); every client is given the list of all (env SERVER_REPLICAS; --stack process only)", maxServerReplicas))
	fs.StringVar(&o.fault, "fault", "", "a fault to put the run through: osie-reboot (reset each VM with QEMU's system_reset, over its QMP socket, while the actions of --fault-during run; the workflow must still end SUCCESS, each interrupted action run again and no action reported SUCCESS twice), "+
		"or kill-server (SIGKILL herd-server replica 1, the one the clients list first, during the action of --fault-during, and leave it dead; needs --server-replicas 2 or more; the workflow must end SUCCESS through the others, one RUNNING and one SUCCESS event per action)")
	during := fs.String("fault-during", faultActionImage, "with --fault: the actions to reset the VM (osie-reboot) or kill a replica (kill-server: replica 1, then 2, ...) during, in the template's order, comma-separated; a name repeated is its rerun ("+faultActionImage+": once its image is streaming; the others once RUNNING is seen)")
	err := fs.Parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cmd, o, 0
		}
		return cmd, o, 2
	}
	if o.machines < 1 || o.machines > maxMachines {
		fmt.Fprintf(stderr, "sandbox: --machines %d: want 1 to %d\n", o.machines, maxMachines)
		return cmd, o, 2
	}
	if o.stack != stackProcess && o.stack != stackCompose {
		fmt.Fprintf(stderr, "sandbox: --stack %q: want %s or %s\n", o.stack, stackProcess, stackCompose)
		return cmd, o, 2
	}
	if o.power != powerQEMU && o.power != powerIPMI {
		fmt.Fprintf(stderr, "sandbox: --power %q: want %s or %s\n", o.power, powerQEMU, powerIPMI)
		return cmd, o, 2
	}
	if o.faultDuring, err = parseFault(o.fault, *during); err != nil {
		fmt.Fprintf(stderr, "sandbox: %v\n", err)
		return cmd, o, 2
	}
	if err := checkReplicas(o); err != nil {
		fmt.Fprintf(stderr, "sandbox: %v\n", err)
		return cmd, o, 2
	}
	if !validNetns(o.netns) {
		fmt.Fprintf(stderr, "sandbox: --netns %q: want 1 to 15 letters, digits, - or _\n", o.netns)
		return cmd, o, 2
	}
	nsName = o.netns
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "sandbox: run as root (namespaces, tap devices, PostgreSQL as the postgres user)")
		return cmd, o, 1
	}
	if o.repo, err = filepath.Abs(o.repo); err != nil {
		fmt.Fprintln(stderr, "sandbox:", err)
		return cmd, o, 1
	}
	if o.dir, err = filepath.Abs(o.dir); err != nil || o.dir == "/" {
		fmt.Fprintln(stderr, "sandbox: bad --dir", o.dir)
		return cmd, o, 1
	}
	if o.fault == faultOSIEReboot && (&sandbox{dir: o.dir}).vmFiles(machine{N: maxMachines}).qmp == "" {
		fmt.Fprintf(stderr, "sandbox: --fault osie-reboot needs the VMs' QMP sockets, and --dir %s is too long for a unix socket's path (%d bytes at most)\n", o.dir, maxUnixPath-1)
		return cmd, o, 2
	}
	return cmd, o, -1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd, o, code := parseArgs(args, stderr)
	if code >= 0 {
		return code
	}
	sb := &sandbox{opts: o, dir: o.dir, out: stdout, start: time.Now()}
	switch cmd {
	case "down":
		if err := sb.down(); err != nil {
			fmt.Fprintln(stderr, "sandbox down:", err)
			return 1
		}
		return 0
	case "up":
		ok, err := sb.up(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "\nsandbox: %v\n", err)
			fmt.Fprintf(stderr, "logs: %s/logs/   remove everything: make sandbox-down\n", sb.dir)
		}
		if o.downAfter {
			if derr := sb.down(); derr != nil {
				fmt.Fprintln(stderr, "sandbox down:", derr)
			}
		}
		if err != nil || !ok {
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "sandbox: unknown command %q (up or down)\n", cmd)
	return 2
}

// envInt reads a number from the environment; anything else is def (and
// flag parsing then reports nothing: the flag's own value wins).
func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return n
	}
	return def
}

func validNetns(s string) bool {
	if s == "" || len(s) > 15 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// sandbox is one run.
type sandbox struct {
	opts  options
	dir   string
	out   io.Writer
	outMu sync.Mutex // the VMs' watchers print concurrently
	start time.Time
	// secrets the services' logs must not hold (checkSecrets).
	secretsMu sync.Mutex
	secrets   []secret
	// bmcPassword is the simulated BMCs' admin password (--power ipmi).
	bmcPassword string
	// progress is what was seen of each machine, once the VMs ran.
	progress []*progress
	// servers are the herd-server replicas (--stack process), in the
	// clients' order; frozen holds the /metrics page of each replica
	// killed (--fault kill-server), read just before, by URL.
	servers  []*proc
	frozenMu sync.Mutex
	frozen   map[string]string
}

// netnsFile, in the state directory, names the namespace up made.
const netnsFile = "netns"

func (sb *sandbox) logPath(name string) string { return filepath.Join(sb.dir, "logs", name+".log") }

// stage prints a stage heading with the time since the sandbox started.
func (sb *sandbox) stage(format string, a ...any) {
	sb.outMu.Lock()
	defer sb.outMu.Unlock()
	fmt.Fprintf(sb.out, "[%7.1fs] ▶ %s\n", time.Since(sb.start).Seconds(), fmt.Sprintf(format, a...))
}

// say prints a detail line under the current stage.
func (sb *sandbox) say(format string, a ...any) {
	sb.outMu.Lock()
	defer sb.outMu.Unlock()
	fmt.Fprintf(sb.out, "            %s\n", fmt.Sprintf(format, a...))
}

// down stops every process recorded in the state directory, deletes the
// namespace and the directory. It works on whatever a run (finished or
// interrupted at any point) left.
func (sb *sandbox) down() error {
	var errs []error
	if b, err := os.ReadFile(filepath.Join(sb.dir, netnsFile)); err == nil && validNetns(strings.TrimSpace(string(b))) {
		// The namespace up made, whatever this run's --netns says; up goes
		// on with its own once the old one is gone.
		own := nsName
		nsName = strings.TrimSpace(string(b))
		defer func() { nsName = own }()
	}
	if _, err := os.Stat(sb.dir); err == nil {
		if netnsExists() {
			sb.downCompose()
		}
		if err := stopAll(sb.dir, sb.say); err != nil {
			errs = append(errs, err)
		}
	}
	if netnsExists() {
		sb.say("deleting network namespace %s", nsName)
		if err := deleteNetns(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(append(errs, fmt.Errorf("kept %s", sb.dir))...)
	}
	unmountUnder(sb.dir)
	if err := os.RemoveAll(sb.dir); err != nil {
		return err
	}
	return nil
}

// unmountUnder detaches whatever is still mounted below dir (a killed
// dockerd's overlays, should it have leaked them), deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}
