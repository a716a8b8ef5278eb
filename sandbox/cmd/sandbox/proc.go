package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A pid file holds two lines: the pid and the path of the program it runs
// (/proc/PID/exe as it was at start). down signals a pid only while that
// still holds, so a pid reused by another process is never touched.

// proc is one process the sandbox started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// spec says how to start a process.
type spec struct {
	name string
	args []string
	// netns: run inside this named network namespace (nsenter execs, so
	// the pid is the program's).
	netns string
	// uid/gid, when set, are the credentials the program runs with (after
	// entering the namespace).
	uid, gid int
	env      []string
	dir      string
	// order: processes are stopped from the highest order to the lowest.
	order int
	// exe is the program that ends up running when args[0] execs another
	// (unshare ... dockerd): the pid file must name that one, or down
	// takes the pid for reused and leaves it running.
	exe string
}

// startProc starts s with its output in logs/NAME.log and its pid file in
// pids/ORDER-NAME.pid.
func (sb *sandbox) startProc(s spec) (*proc, error) {
	args := s.args
	if s.netns != "" {
		pre := []string{"nsenter", "--net=/run/netns/" + s.netns}
		if s.uid != 0 {
			pre = append(pre, "--setuid", strconv.Itoa(s.uid), "--setgid", strconv.Itoa(s.gid))
		}
		args = append(append(pre, "--"), args...)
	}
	logf, err := os.OpenFile(sb.logPath(s.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Dir = s.dir
	// Its own session: a ^C in the terminal reaches the sandbox
	// only, and the services outlive it until sandbox-down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if s.netns == "" && s.uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", s.name, err)
	}
	p := &proc{name: s.name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	// The pid file names the final program: wait for nsenter's exec.
	want := args[len(args)-len(s.args)]
	if s.exe != "" {
		want = s.exe
	}
	if lp, err := exec.LookPath(want); err == nil {
		want = lp
	}
	exe := waitExe(cmd.Process.Pid, want, 2*time.Second)
	pf := filepath.Join(sb.dir, "pids", fmt.Sprintf("%02d-%s.pid", s.order, s.name))
	if err := os.WriteFile(pf, []byte(fmt.Sprintf("%d\n%s\n", cmd.Process.Pid, exe)), 0o644); err != nil {
		return p, err
	}
	return p, nil
}

// exited reports whether p has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExe waits until pid runs want (after nsenter's exec) and returns
// /proc/PID/exe.
func waitExe(pid int, want string, within time.Duration) string {
	deadline := time.Now().Add(within)
	exe := ""
	for {
		exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if sameProgram(exe, want) || time.Now().After(deadline) {
			return exe
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameProgram(exe, want string) bool {
	if exe == "" {
		return false
	}
	if exe == want {
		return true
	}
	r, err := filepath.EvalSymlinks(want)
	return err == nil && r == exe
}

// pidFile is one recorded process.
type pidFile struct {
	path, exe string
	pid       int
}

func readPidFiles(dir string) ([]pidFile, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	if err != nil {
		return nil, err
	}
	// Highest order first: the VM, then boots, ..., PostgreSQL last.
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	var out []pidFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		pf, ok := parsePidFile(string(b))
		if !ok {
			continue
		}
		pf.path = p
		out = append(out, pf)
	}
	return out, nil
}

func parsePidFile(s string) (pidFile, bool) {
	lines := strings.SplitN(strings.TrimSpace(s), "\n", 2)
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 1 {
		return pidFile{}, false
	}
	pf := pidFile{pid: pid}
	if len(lines) == 2 {
		pf.exe = strings.TrimSpace(lines[1])
	}
	return pf, true
}

// alive reports whether pf's process still runs the program recorded.
func (pf pidFile) alive() bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pf.pid))
	if err != nil {
		return false
	}
	if pf.exe == "" {
		return true
	}
	// A deleted binary (rebuilt meanwhile) reads "PATH (deleted)".
	return strings.TrimSuffix(exe, " (deleted)") == pf.exe
}

// stopPid sends SIGTERM, then SIGKILL after grace, to a recorded process.
func stopPid(pf pidFile, grace time.Duration) error {
	if !pf.alive() {
		return nil
	}
	_ = syscall.Kill(pf.pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !pf.alive() || zombie(pf.pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pf.pid, syscall.SIGKILL)
	for range 100 {
		if !pf.alive() || zombie(pf.pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("pid %d (%s) does not stop", pf.pid, pf.exe)
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}

// stopAll stops every recorded process, highest order first.
func stopAll(dir string, say func(string, ...any)) error {
	pfs, err := readPidFiles(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, pf := range pfs {
		name := strings.TrimSuffix(filepath.Base(pf.path), ".pid")
		if pf.alive() {
			say("stopping %s (pid %d)", name[3:], pf.pid)
			grace := 15 * time.Second
			if strings.Contains(name, "qemu") {
				grace = 2 * time.Second
			}
			if err := stopPid(pf, grace); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		_ = os.Remove(pf.path)
	}
	return errors.Join(errs...)
}
