//go:build bench

package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/services/boots/internal/netnstest"
)

var profileDir = flag.String("profile-boots", "", "instead of the comparison: profile herd-boots alone at -cpu-rate and write cpu.pprof and strace.txt into this directory")

// pprofAddr is herd-boots' pprof listener in the server namespace while
// it is profiled.
const pprofAddr = "127.0.0.1:6061"

// profileBoots, instead of the comparison: herd-boots alone at -cpu-rate,
// three runs: one plain (its CPU per exchange and GC cycles per exchange),
// one under a Go CPU profile (profileDir/cpu.pprof), and, when strace is
// installed, one under `strace -c -f` (profileDir/strace.txt: system calls
// per exchange).
func profileBoots(t *testing.T, bin string, s *servertest.Server, srv *netnstest.NS, pd *perfdhcp) {
	t.Helper()
	if err := os.MkdirAll(*profileDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if *compareBoots != "" {
		// Side by side first: this build and -compare-boots in turn, a
		// fresh process for each CPU run.
		var this, other []string
		for range 3 {
			for _, bin := range []string{bin, *compareBoots} {
				b := startBoots(t, bin, s, srv)
				if bin != *compareBoots {
					b.name = "herd-boots (this build)"
				} else {
					b.name = "herd-boots (" + *compareBootsName + ")"
				}
				waitAnswers(t, b.proc, pd)
				c := measureCPU(t, b.proc, pd, *cpuRate)
				b.stop(t)
				f := fmt.Sprintf("%.1f µs (%.2f s user + %.2f s system)", us(c.perExchange()), c.user.Seconds(), c.system.Seconds())
				if bin != *compareBoots {
					this = append(this, f)
				} else {
					other = append(other, f)
				}
			}
		}
		t.Logf("CPU per exchange at %d/s, in turn: this build %v; %s %v", *cpuRate, this, *compareBootsName, other)
	}
	b := startBoots(t, bin, s, srv, "--pprof-addr", pprofAddr)
	defer b.stop(t)
	waitAnswers(t, b.proc, pd)
	t.Logf("herd-boots pid %d", b.cmd.Process.Pid)

	gc0 := b.metric(t, "go_gc_duration_seconds_count")
	c := measureCPU(t, b.proc, pd, *cpuRate)
	gc1 := b.metric(t, "go_gc_duration_seconds_count")
	t.Logf("plain: %.1f µs CPU per exchange (%.2f s user + %.2f s system, %d ACKs); %v GC cycles (%.4f per exchange)",
		us(c.perExchange()), c.user.Seconds(), c.system.Seconds(), c.run.acks, gc1-gc0, (gc1-gc0)/float64(max(1, c.run.acks)))

	// Go CPU profile over one run.
	done := make(chan error, 1)
	go func() {
		secs := int(duration.Seconds()) + 1
		long := *b.http // its timeout is shorter than the profile
		long.Timeout = *duration + time.Minute
		res, err := long.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs))
		if err != nil {
			done <- err
			return
		}
		defer res.Body.Close()
		f, err := os.Create(filepath.Join(*profileDir, "cpu.pprof"))
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, res.Body)
		done <- errors.Join(err, f.Close())
	}()
	time.Sleep(200 * time.Millisecond)
	c = measureCPU(t, b.proc, pd, *cpuRate)
	if err := <-done; err != nil {
		t.Fatalf("CPU profile: %v", err)
	}
	t.Logf("under the CPU profile: %.1f µs CPU per exchange; %s", us(c.perExchange()), filepath.Join(*profileDir, "cpu.pprof"))

	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Logf("no strace: no system call counts")
		return
	}
	out := filepath.Join(*profileDir, "strace.txt")
	cmd := exec.CommandContext(context.Background(), strace, "-c", "-f", "-o", out, "-p", strconv.Itoa(b.cmd.Process.Pid))
	if err := cmd.Start(); err != nil {
		t.Fatalf("strace: %v", err)
	}
	time.Sleep(time.Second) // attached to every thread
	c = measureCPU(t, b.proc, pd, *cpuRate)
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	t.Logf("under strace: %d ACKs (%d DISCOVER, %d REQUEST received by herd-boots, if all arrived); counts in %s", c.run.acks, c.run.discovers, c.run.requests, out)
}
