package e2e

// Network namespaces for the link-loss test: made here, with 10.x
// addresses only inside them, and deleted by name when the test ends.

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// namespace is a network namespace of the test's own, its loopback up.
func namespace(t *testing.T, prefix string) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("network namespaces need root and iproute2 (apt-get install -y iproute2)")
		}
		t.Skip("network namespaces need root and iproute2")
	}
	name := prefix + rand.Text()[:6]
	ip(t, "netns", "add", name)
	t.Cleanup(func() { ip(t, "netns", "delete", name) })
	ip(t, "-n", name, "link", "set", "lo", "up")
	return name
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// subnet is a random 10.x.y. prefix for one test's veth pair.
func subnet() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return fmt.Sprintf("10.%d.%d.", 100+int(b[0])%100, b[1])
}

// veth joins namespaces a (ifa, addrA) and b (ifb, addrB), both up.
func veth(t *testing.T, a, ifa, addrA, b, ifb, addrB string) {
	t.Helper()
	ip(t, "-n", a, "link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", b)
	ip(t, "-n", a, "addr", "add", addrA, "dev", ifa)
	ip(t, "-n", b, "addr", "add", addrB, "dev", ifb)
	ip(t, "-n", a, "link", "set", ifa, "up")
	ip(t, "-n", b, "link", "set", ifb, "up")
}

// listenIn is a TCP listener on addr inside namespace ns, closed when the
// test ends. The socket is made on a thread switched into ns and back
// (a thread left to end could send a parent-death signal to a process
// started from it, such as pgtest's PostgreSQL).
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	type res struct {
		l   net.Listener
		err error
	}
	done := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- res{err: err}
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- res{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- res{err: os.NewSyscallError("setns", err)}
			return
		}
		l, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- res{l, os.NewSyscallError("setns back", err)} // thread stays locked: discarded
			return
		}
		runtime.UnlockOSThread()
		done <- res{l, lerr}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	return r.l
}

// forward carries each connection accepted on l to target (dialled from
// the test's own namespace: herd-server on the host's loopback) until l
// is closed.
func forward(l net.Listener, target string) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); u.Close() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
}
