//go:build bench

package storm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
)

// buildServices builds herd-boots and herd-metadata (no race detector:
// this measures them) into a directory of the test's own.
func buildServices(t *testing.T) (boots, metadata string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/herd-metal/herd/services/boots/cmd/herd-boots", "github.com/herd-metal/herd/services/metadata/cmd/herd-metadata")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build herd-boots herd-metadata: %v\n%s", err, out)
	}
	return filepath.Join(dir, "herd-boots"), filepath.Join(dir, "herd-metadata")
}

// proc is a service the benchmark started, stopped by its own pid when
// the test ends, whatever happened.
type proc struct {
	name string
	pid  int
	cmd  *exec.Cmd
	logs *servertest.Buffer
	exit chan struct{}
	err  error
}

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, logs: &servertest.Buffer{}, exit: make(chan struct{})}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.pid = cmd.Process.Pid
	go func() { p.err = cmd.Wait(); close(p.exit) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) alive() bool {
	select {
	case <-p.exit:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL to its process group after 15 s.
func (p *proc) stop(t *testing.T) {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		<-p.exit
		t.Errorf("%s (pid %d) did not stop within 15 s of SIGTERM; killed", p.name, p.pid)
	}
}

// usage is a process's CPU time so far and its memory.
type usage struct {
	cpu      time.Duration // user + system, all threads
	rss, hwm float64       // VmRSS, VmHWM (peak) in bytes
}

// readUsage reads pid's /proc stat and status.
func readUsage(pid int) (usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return usage{}, err
	}
	cpu, err := parseStatCPU(string(stat))
	if err != nil {
		return usage{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, err
	}
	u := usage{cpu: cpu}
	u.rss, u.hwm = statusKB(string(status), "VmRSS:"), statusKB(string(status), "VmHWM:")
	return u, nil
}

// parseStatCPU is utime + stime of a /proc/PID/stat line (clock ticks of
// 10 ms: USER_HZ is 100 wherever Go runs Linux). Fields are counted from
// the last ')', the command name may hold anything.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no ')' closing the command name")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want ≥ 13", len(f))
	}
	var sum time.Duration
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 63)
		if err != nil {
			return 0, err
		}
		sum += time.Duration(n) * 10 * time.Millisecond
	}
	return sum, nil
}

// statusKB is a "Key:   123 kB" line of /proc/PID/status in bytes (0: absent).
func statusKB(status, key string) float64 {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(rest); len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// serverPid finds the herd-server process of state directory dir: the one
// whose environment names it (servertest keeps its process to itself).
func serverPid(dir string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := []byte("HERD_STATE_DIR=" + dir + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		if exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); filepath.Base(exe) == "herd-server" {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no herd-server process with HERD_STATE_DIR=%s", dir)
}
