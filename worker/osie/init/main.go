// Command init is the OSIE's /init, PID 1 of herd's in-memory OS: it
// mounts what a container engine needs, loads the kernel modules, reads
// its settings from the kernel command line, leases an address on the boot
// NIC, starts containerd and dockerd when the initramfs has them (else
// herd-worker runs runc itself), runs herd-worker and, when the worker has
// ended, reboots or powers off as the workflow asked.
//
// Its settings are documented in worker/osie/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "herd-init is the OSIE's PID 1 and reboots the machine when done: it does not run anywhere else")
		os.Exit(2)
	}
	mountErrs := mountAll()
	cmdline, cmdlineErr := os.ReadFile("/proc/cmdline")
	cfg, parseErr := ParseCmdline(string(cmdline))
	if parseErr != nil {
		cfg, _ = ParseCmdline("") // the defaults, so the machine still ends as configured
	}
	console := openConsole(cfg.Console)
	sink := &syslogSink{}
	level := &slog.LevelVar{}
	if cfg.Debug {
		level.Set(slog.LevelDebug)
	}
	log := slog.New(newHandler(console, sink, uptime, level))

	action := PowerOff
	func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("init crashed", "panic", fmt.Sprint(r))
			}
		}()
		action = run(log, sink, cfg, errors.Join(append(mountErrs, cmdlineErr, parseErr)...))
	}()
	log.Info("bye", "action", string(action))
	time.Sleep(200 * time.Millisecond) // the last syslog datagrams leave
	powerDown(action)
}

// run is the OSIE's life; it returns what to do at the end.
func run(log *slog.Logger, sink *syslogSink, cfg Config, early error) PowerAction {
	log.Info("herd OSIE init starting", "kernel", kernelRelease())
	if early != nil {
		log.Error("early setup", "err", early)
	}
	log.Info("kernel command line parsed", "server", cfg.Server, "worker_id", cfg.WorkerID,
		"token_set", cfg.Token != "", "cert_url", cfg.CertURL, "metadata", cfg.MetadataURL,
		"registry", cfg.Registry, "syslog", cfg.Syslog, "boot_mac", macString(cfg.MAC),
		"worker", cfg.Worker, "after", string(cfg.After), "modules", strings.Join(cfg.Modules, ","))
	if len(cfg.Unknown) > 0 {
		log.Warn("unknown herd.* kernel parameters ignored", "keys", strings.Join(cfg.Unknown, ","))
	}

	later := loadModules(log, cfg.Modules)

	// The container engine does not need the network: it starts while the
	// boot NIC asks for its lease.
	ctx := context.Background()
	eng := &engine{log: log, runtime: RuntimeFor(fileExists(dockerdBin))}
	log.Info("container runtime", "runtime", eng.runtime)
	engineUp := make(chan error, 1)
	go func() { engineUp <- eng.start(ctx, cfg) }()
	defer eng.stop()

	nctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	lease, err := bringUpNetwork(nctx, log, cfg.MAC, cfg.Debug)
	cancel()
	if err != nil {
		log.Error("network down: the worker cannot reach the server", "err", err)
		sink.Discard()
		return cfg.After
	}
	lg := log.With("mac", lease.nic.MAC.String())
	lg.Info("DHCP lease", "nic", lease.nic.Name, "addr", lease.cfg.Addr.String(), "gateway", lease.cfg.Gateway.String(),
		"dns", fmt.Sprint(lease.cfg.DNS), "server", lease.cfg.Server.String(), "hostname", lease.cfg.Hostname, "lease", lease.cfg.Lease)
	if err := applyNetConfig(lease.nic.Name, lease.cfg); err != nil {
		lg.Error("network setup", "err", err)
	}
	go keepLease(ctx, lg, lease)
	startSyslog(lg, sink, cfg, lease)
	if cfg.WorkerID == "" {
		cfg.WorkerID = lease.nic.MAC.String()
		lg.Info("worker id defaults to the boot NIC's MAC", "worker_id", cfg.WorkerID)
	}
	if err := <-engineUp; err != nil {
		lg.Error("container engine down: no action can run", "err", err)
		return cfg.After
	}

	<-later // the file systems actions mount

	// herd-worker: it runs the workflow; its last action may ask for a
	// reboot or a power off through the power file.
	_ = os.Remove(powerFile)
	if !fileExists(cfg.Worker) {
		lg.Error("worker binary not found", "worker", cfg.Worker)
		return cfg.After
	}
	env := cfg.WorkerEnv(dockerSock, powerFile)
	if eng.runtime == runtimeRunc {
		env = append(env, RuncWorkerEnv(cfg)...)
	}
	worker, err := startChild(lg, filepath.Base(cfg.Worker), cfg.Worker, nil, env)
	if err != nil {
		lg.Error("worker", "err", err)
		return cfg.After
	}
	lg.Info("worker started", "worker", cfg.Worker, "pid", worker.Process.Pid, "worker_id", cfg.WorkerID)
	werr := worker.Wait()
	lg.Info("worker ended", "exit", exitString(werr))
	req, rerr := os.ReadFile(powerFile)
	action, why := DecidePower(string(req), rerr, cfg.After)
	lg.Info("workflow over", "action", string(action), "why", why)
	return action
}

// loadModules loads the always-loaded modules of /etc/herd/modules and the
// herd.modules= ones, then, in rounds (a bus driver brings new devices),
// the listed drivers whose aliases match a device present. It starts
// loading the "later" ones in the background: the channel closes when done.
func loadModules(log *slog.Logger, extra []string) <-chan struct{} {
	laterDone := make(chan struct{})
	start := time.Now()
	dir := filepath.Join("/lib/modules", kernelRelease())
	deps, err := readWith(filepath.Join(dir, "modules.dep"), ParseModulesDep)
	if err != nil {
		log.Error("no module loaded", "err", err)
		close(laterDone)
		return laterDone
	}
	aliases, err := readWith(filepath.Join(dir, "modules.alias"), ParseModulesAlias)
	if err != nil {
		log.Warn("no modules.alias: loading every listed driver", "err", err)
	}
	specs, err := readWith("/etc/herd/modules", ParseModuleSpecs)
	if err != nil {
		log.Warn("no module list", "err", err)
	}
	allowed := map[string]bool{}
	wanted := append([]string(nil), extra...)
	var later []string
	for _, s := range specs {
		allowed[s.Name] = true
		switch {
		case s.Later:
			later = append(later, s.Name)
		case s.Always || aliases == nil:
			wanted = append(wanted, s.Name)
		}
	}
	loadedSet := map[string]bool{}
	load := func(names []string) int {
		files, missing := deps.LoadOrder(names)
		n := 0
		for _, file := range files {
			if loadedSet[file] {
				continue
			}
			loadedSet[file] = true
			if err := loadModule(filepath.Join(dir, file)); err != nil {
				log.Warn("module not loaded", "err", err)
				continue
			}
			n++
		}
		if len(missing) > 0 {
			log.Debug("modules not shipped or built in", "modules", strings.Join(missing, ","))
		}
		return n
	}
	total := load(wanted)
	var drivers []string
	for round := 0; round < 4 && aliases != nil; round++ {
		found := DriversFor(aliases, readModaliases(), allowed)
		var fresh []string
		for _, d := range found {
			if f, ok := deps[d]; ok && !loadedSet[f.file] {
				fresh = append(fresh, d)
			}
		}
		if len(fresh) == 0 {
			break
		}
		drivers = append(drivers, fresh...)
		total += load(fresh)
	}
	log.Info("kernel modules loaded", "loaded", total, "drivers", strings.Join(drivers, ","),
		"took", time.Since(start).Round(time.Millisecond))
	go func() { // loadedSet is this goroutine's alone from here on
		defer close(laterDone)
		start := time.Now()
		n := load(later)
		log.Info("file system modules loaded", "loaded", n, "took", time.Since(start).Round(time.Millisecond))
	}()
	return laterDone
}

// readModaliases lists the modalias of every device the kernel sees.
func readModaliases() []string {
	files, _ := filepath.Glob("/sys/bus/*/devices/*/modalias")
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if s := strings.TrimSpace(string(b)); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func readWith[T any](file string, parse func(io.Reader) (T, error)) (T, error) {
	f, err := os.Open(file)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return parse(f)
}

// startSyslog points the log at the syslog host once the network is up.
func startSyslog(log *slog.Logger, sink *syslogSink, cfg Config, lease *bootLease) {
	addr := cfg.SyslogAddr()
	if addr == "" {
		sink.Discard()
		return
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		log.Warn("syslog host unusable: logging to the console only", "syslog", addr, "err", err)
		sink.Discard()
		return
	}
	host := lease.cfg.Hostname
	if host == "" {
		host = strings.ReplaceAll(lease.nic.MAC.String(), ":", "-")
	}
	sink.SetConn(conn, host)
	log.Info("logging to syslog", "syslog", addr)
}

func openConsole(path string) io.Writer {
	for _, p := range []string{path, DefaultConsole} {
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			return f
		}
	}
	return os.Stderr
}

func exitString(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

// engine is containerd and dockerd on it, or runc alone (nothing to
// start: herd-worker runs it).
type engine struct {
	log                         *slog.Logger
	runtime                     string // runtimeDocker or runtimeRunc
	containerd, dockerd         *exec.Cmd
	containerdDone, dockerdDone <-chan struct{}
	containerdErr, dockerdErr   error
}

// start starts containerd and dockerd (which waits for containerd's socket
// itself) at once, and returns when the Docker API answers /info; for
// runc it checks that runc runs.
func (e *engine) start(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if e.runtime == runtimeRunc {
		v, err := runcVersion(ctx)
		if err != nil {
			return err
		}
		e.log.Info("runc ready", "version", v)
		return nil
	}
	var err error
	if e.containerd, err = startChild(e.log, "containerd", containerdBin, ContainerdArgs(cfg.Debug), []string{childPath}); err != nil {
		return err
	}
	e.containerdDone = waitDone(e.containerd, &e.containerdErr)
	if e.dockerd, err = startChild(e.log, "dockerd", dockerdBin, DockerdArgs(cfg), DockerdEnv()); err != nil {
		return err
	}
	e.dockerdDone = waitDone(e.dockerd, &e.dockerdErr)
	if err := waitSocket(ctx, containerdSock, e.containerdDone); err != nil {
		return fmt.Errorf("containerd did not come up: %w", err)
	}
	e.log.Info("containerd ready")
	if err := waitSocket(ctx, dockerSock, e.dockerdDone); err != nil {
		return fmt.Errorf("dockerd did not come up: %w", err)
	}
	info, err := dockerInfo(ctx, dockerSock)
	if err != nil {
		return fmt.Errorf("docker info: %w", err)
	}
	e.log.Info("docker ready", "version", info.ServerVersion, "storage", info.Driver, "cgroup", info.CgroupVersion,
		"cgroup_driver", info.CgroupDriver, "cpus", info.NCPU, "mem_mib", info.MemTotal>>20)
	return nil
}

func (e *engine) stop() {
	stopChild(e.log, "dockerd", e.dockerd, e.dockerdDone, 15*time.Second)
	stopChild(e.log, "containerd", e.containerd, e.containerdDone, 10*time.Second)
}
