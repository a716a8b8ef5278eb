//go:build bench

package storm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// netNS is a network namespace the benchmark made (herd-storm-*), removed
// at the test's end.
type netNS struct {
	name string
	t    testing.TB
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func tag() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newNS(t testing.TB, role string) *netNS {
	t.Helper()
	n := &netNS{name: "herd-storm-" + role + "-" + tag(), t: t}
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	n.ip("link", "set", "lo", "up")
	return n
}

func (n *netNS) ip(args ...string) {
	n.t.Helper()
	run(n.t, "ip", append([]string{"-n", n.name}, args...)...)
}

// ipBatch runs many `ip` commands in one process (thousands of addresses).
func (n *netNS) ipBatch(lines []string) {
	n.t.Helper()
	cmd := exec.Command("ip", "-n", n.name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("ip -n %s -batch: %v: %s", n.name, err, out)
	}
}

// command runs name inside the namespace; `ip netns exec` execs it in
// place, so the command's pid is the program's own.
func (n *netNS) command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// veth joins a (ifa, address cidrA) and b (ifb, address cidrB), both up.
func veth(t testing.TB, a *netNS, ifa, cidrA string, b *netNS, ifb, cidrB string) {
	t.Helper()
	for _, c := range []string{cidrA, cidrB} {
		if !strings.HasPrefix(c, "10.") {
			t.Fatalf("only 10.x addresses inside the benchmark's namespaces, not %s", c)
		}
	}
	tmp := "hs" + tag()
	run(t, "ip", "link", "add", tmp, "type", "veth", "peer", "name", tmp+"p")
	run(t, "ip", "link", "set", tmp, "netns", a.name)
	run(t, "ip", "link", "set", tmp+"p", "netns", b.name)
	a.ip("link", "set", tmp, "name", ifa)
	b.ip("link", "set", tmp+"p", "name", ifb)
	a.ip("addr", "add", cidrA, "dev", ifa)
	b.ip("addr", "add", cidrB, "dev", ifb)
	a.ip("link", "set", ifa, "up")
	b.ip("link", "set", ifb, "up")
}

// do runs f on an OS thread switched into the namespace: the sockets f
// makes stay in it. The thread is discarded afterwards rather than
// switched back, so no other goroutine ever runs in the namespace.
func (n *netNS) do(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		target, err := os.Open("/var/run/netns/" + n.name)
		if err != nil {
			ch <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- err
			return
		}
		ch <- f()
	}()
	return <-ch
}

// machineRcvBuf bounds a simulated machine's TCP receive buffer
// (SO_RCVBUF, set before connecting: Linux doubles it for its own
// overhead and no longer autotunes it), so that its window is about
// iPXE's largest, 256 KiB (TCP_MAX_WINDOW_SIZE, include/ipxe/tcp.h).
// Autotuned up to tcp_rmem's max (32 MiB on this kernel), the unread
// receive queues of 1,000 machines, all in this one kernel where real
// machines each have their own memory, pushed TCP's memory past tcp_mem's
// pressure mark (1652 MiB of 1500): the kernel dropped segments at the
// machines' receive queues (25,475 TCPRcvQDrop in one storm), herd-boots'
// retransmissions backed off (24,111 timeouts), and now and then one
// download stalled past the 60 s bounds, herd-boots' and the machine's.
const machineRcvBuf = 256 << 10

func machineSocket(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, machineRcvBuf)
	}); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("SO_RCVBUF %d: %w", machineRcvBuf, err)
	}
	return nil
}

// dialFrom dials addr from local (an address of the namespace's) as a
// machine does (machineRcvBuf).
func (n *netNS) dialFrom(ctx context.Context, local net.IP, addr string) (c net.Conn, err error) {
	err = n.do(func() error {
		var e error
		c, e = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Control: machineSocket}).DialContext(ctx, "tcp", addr)
		return e
	})
	return c, err
}

// listen listens in the namespace; asMachine gives the connections it
// accepts a machine's receive buffer (machineRcvBuf).
func (n *netNS) listen(network, addr string, asMachine bool) (l net.Listener, err error) {
	var lc net.ListenConfig
	if asMachine {
		lc.Control = machineSocket
	}
	err = n.do(func() error {
		var e error
		l, e = lc.Listen(context.Background(), network, addr)
		return e
	})
	return l, err
}

// forward listens on addr inside the namespace and copies each connection
// to target on the host's loopback (herd-server for boots and metadata).
func (n *netNS) forward(addr, target string) {
	n.t.Helper()
	l, err := n.listen("tcp", addr, false)
	if err != nil {
		n.t.Fatalf("forward %s in %s: %v", addr, n.name, err)
	}
	n.t.Cleanup(func() { l.Close() })
	go serve(l, func(c net.Conn) {
		u, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer u.Close()
		go io.Copy(u, c)
		io.Copy(c, u)
	})
}

// serve runs handle for each connection l accepts, each in a goroutine
// that closes it afterwards, until l is closed.
func serve(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}
