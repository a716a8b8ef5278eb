package e2e

// Network namespaces for the network fault tests: each made here (with
// 10.x addresses only inside it) and deleted, by its name, when the test
// ends. They need root and iproute2; under CI=true their absence fails.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"testing"
	"time"
)

// netns is a network namespace of the test's own.
type netns struct {
	t    *testing.T
	name string
}

// newNetns creates the namespace prefix+random with its loopback up.
func newNetns(t *testing.T, prefix string) *netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("network namespaces need root and iproute2 (apt-get install -y iproute2)")
		}
		t.Skip("network namespaces need root and iproute2")
	}
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	n := &netns{t: t, name: prefix + hex.EncodeToString(tag)}
	runIP(t, "netns", "add", n.name)
	t.Cleanup(func() { runIP(t, "netns", "delete", n.name) })
	n.ip("link", "set", "lo", "up")
	return n
}

func runIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ip runs `ip` inside the namespace.
func (n *netns) ip(args ...string) {
	n.t.Helper()
	runIP(n.t, append([]string{"-n", n.name}, args...)...)
}

// vethPair joins a and b by a veth pair, ifa (addrA, a 10.x CIDR) in a and
// ifb (addrB) in b, both up.
func vethPair(t *testing.T, a *netns, ifa, addrA string, b *netns, ifb, addrB string) {
	t.Helper()
	a.ip("link", "add", ifa, "type", "veth", "peer", "name", ifb, "netns", b.name)
	a.ip("addr", "add", addrA, "dev", ifa)
	b.ip("addr", "add", addrB, "dev", ifb)
	a.ip("link", "set", ifa, "up")
	b.ip("link", "set", ifb, "up")
}

// do runs f on an OS thread switched into the namespace (the sockets f
// makes stay in it), then switches the thread back. The thread must not
// end: a process started from it with a parent-death signal (pgtest's
// PostgreSQL) would get that signal; only if switching back fails is it
// left locked, and so discarded.
func (n *netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		ns, err := os.Open("/var/run/netns/" + n.name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- os.NewSyscallError("setns", err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- os.NewSyscallError("setns back", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// dial makes a TCP connection from inside the namespace (a gRPC
// WithContextDialer).
func (n *netns) dial(ctx context.Context, addr string) (c net.Conn, err error) {
	err = n.do(func() error {
		var e error
		c, e = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return e
	})
	return c, err
}

// listen is a TCP listener on addr inside the namespace, closed when
// the test ends.
func (n *netns) listen(addr string) net.Listener {
	n.t.Helper()
	var l net.Listener
	if err := n.do(func() error {
		var e error
		l, e = net.Listen("tcp", addr)
		return e
	}); err != nil {
		n.t.Fatalf("listen on %s in %s: %v", addr, n.name, err)
	}
	n.t.Cleanup(func() { l.Close() })
	return l
}

// latency is a delay a relay adds to one direction of its connections;
// it may change while they run.
type latency struct{ d atomic.Int64 }

func (l *latency) set(d time.Duration) { l.d.Store(int64(d)) }

// relay carries each connection accepted on l to target, dialled from the
// test's own namespace (herd-server or PostgreSQL on the host's loopback),
// holding what goes towards target by toTarget and what comes back by
// fromTarget (nil: no delay). It stops when l is closed.
func relay(l net.Listener, target string, toTarget, fromTarget *latency) {
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
				go func() { carry(u, c, toTarget); u.Close() }()
				carry(c, u, fromTarget)
			}()
		}
	}()
}

// carry copies src to dst, each chunk delivered lat after it was read (in
// order, reading on meanwhile: a link's latency, not its bandwidth).
func carry(dst io.Writer, src io.Reader, lat *latency) {
	if lat == nil {
		_, _ = io.Copy(dst, src)
		return
	}
	type chunk struct {
		due time.Time
		b   []byte
	}
	queue := make(chan chunk, 1024)
	go func() {
		defer close(queue)
		for {
			b := make([]byte, 32<<10)
			k, err := src.Read(b)
			if k > 0 {
				queue <- chunk{time.Now().Add(time.Duration(lat.d.Load())), b[:k]}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range queue {
		time.Sleep(time.Until(ch.due))
		if _, err := dst.Write(ch.b); err != nil {
			if c, ok := src.(io.Closer); ok {
				c.Close() // ends the reader
			}
			for range queue {
			}
			return
		}
	}
}
