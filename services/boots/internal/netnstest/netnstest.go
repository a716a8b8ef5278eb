// Package netnstest gives tests network namespaces of their own, joined by
// veth pairs, with 10.x addresses only inside them; everything made is
// removed at the test's end. It needs root and iproute2.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// NS is a network namespace made by New.
type NS struct {
	Name string
	t    testing.TB
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Suffix is a short random tag for names (interface names are at most 15
// bytes).
func Suffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// New creates a namespace named prefix+random with loopback up.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	realtest.Root(t)
	realtest.Command(t, "ip")
	n := &NS{Name: prefix + Suffix(), t: t}
	ip(t, "netns", "add", n.Name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.Name).Run() })
	n.IP("link", "set", "lo", "up")
	return n
}

// IP runs `ip` inside the namespace.
func (n *NS) IP(args ...string) {
	n.t.Helper()
	ip(n.t, append([]string{"-n", n.Name}, args...)...)
}

// Command is a command run inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Veth joins a and b by a veth pair named ifa (in a) and ifb (in b), with
// address addrA (CIDR, 10.x only, may be "") on ifa and mac on ifb (may be
// nil), both up.
func Veth(t testing.TB, a *NS, ifa, addrA string, b *NS, ifb string, mac net.HardwareAddr) {
	t.Helper()
	if addrA != "" && !strings.HasPrefix(addrA, "10.") {
		t.Fatalf("netnstest: only 10.x addresses, not %s", addrA)
	}
	tmp := "vt" + Suffix()
	ip(t, "link", "add", tmp, "type", "veth", "peer", "name", tmp+"p")
	ip(t, "link", "set", tmp, "netns", a.Name)
	ip(t, "link", "set", tmp+"p", "netns", b.Name)
	a.IP("link", "set", tmp, "name", ifa)
	b.IP("link", "set", tmp+"p", "name", ifb)
	if mac != nil {
		b.IP("link", "set", ifb, "address", mac.String())
	}
	if addrA != "" {
		a.IP("addr", "add", addrA, "dev", ifa)
	}
	a.IP("link", "set", ifa, "up")
	b.IP("link", "set", ifb, "up")
}

// Forward listens on addr inside the namespace and forwards each
// connection to target, dialled from the test's own namespace (e.g. a
// herd-server on the host's loopback). The socket is made on an OS thread
// switched into the namespace and back; sockets keep their namespace.
func (n *NS) Forward(addr, target string) {
	n.t.Helper()
	l, err := n.listen(addr)
	if err != nil {
		n.t.Fatalf("forward %s in %s: %v", addr, n.Name, err)
	}
	n.t.Cleanup(func() { l.Close() })
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
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
}

func (n *NS) listen(addr string) (l net.Listener, err error) {
	err = n.Do(func() error {
		var e error
		l, e = net.Listen("tcp", addr)
		return e
	})
	return l, err
}

// HTTPClient is a client whose connections are made inside the namespace.
func (n *NS) HTTPClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = n.Do(func() error {
				var e error
				c, e = (&net.Dialer{}).DialContext(ctx, network, addr)
				return e
			})
			return c, err
		}}}
}

// Do runs f on an OS thread switched into the namespace (sockets made in f
// stay in it), then switches back.
func (n *NS) Do(f func() error) error {
	type res struct {
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked (and so discarded at the goroutine's
		// end) if switching back fails.
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- res{err}
			return
		}
		defer self.Close()
		target, err := os.Open("/var/run/netns/" + n.Name)
		if err != nil {
			ch <- res{err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err}
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err} // the thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		ch <- res{ferr}
	}()
	return (<-ch).err
}

// Frame is one Ethernet frame a Capture saw.
type Frame struct {
	At   time.Time
	Data []byte
}

// Capture records every frame arriving on or leaving an interface inside
// a namespace (an AF_PACKET socket), until the test ends.
type Capture struct {
	mu     sync.Mutex
	frames []Frame
	fd     int
}

// Capture starts recording ifname's frames.
func (n *NS) Capture(ifname string) *Capture {
	n.t.Helper()
	c := &Capture{fd: -1}
	err := n.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		// A read wakes up this often to notice the end of the test.
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		n.t.Fatalf("capture on %s in %s: %v", ifname, n.Name, err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 65536)
		for {
			select {
			case <-done:
				return
			default:
			}
			k, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil || k <= 0 {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, Frame{At: time.Now(), Data: append([]byte(nil), buf[:k]...)})
			c.mu.Unlock()
		}
	}()
	n.t.Cleanup(func() { close(done); <-stopped; unix.Close(c.fd) })
	return c
}

// Frames is what the capture has seen so far.
func (c *Capture) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
