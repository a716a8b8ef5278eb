package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestListenReusePort: with the option two listeners bind one port, the
// kernel hands connections to both, and once one is closed the next
// connections reach the other; without it the second bind is refused.
func TestListenReusePort(t *testing.T) {
	ctx := context.Background()
	a, err := listenTCP(ctx, "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	addr := a.Addr().String()
	if _, err := listenTCP(ctx, addr, false); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listener on %s without the option: %v, want EADDRINUSE", addr, err)
	}
	b, err := listenTCP(ctx, addr, true)
	if err != nil {
		t.Fatalf("second listener on %s with the option: %v", addr, err)
	}
	defer b.Close()

	got := make(chan string, 256)
	accept := func(name string, l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			got <- name
			c.Close()
		}
	}
	go accept("a", a)
	go accept("b", b)
	dial := func() string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer c.Close()
		select {
		case name := <-got:
			return name
		case <-time.After(10 * time.Second):
			t.Fatalf("no listener accepted a connection to %s", addr)
		}
		return ""
	}
	// The kernel picks by a hash of each connection's addresses and ports,
	// so 64 connections from new source ports all landing on one listener
	// would mean the port is not shared (odds 2^-63 otherwise).
	seen := map[string]int{}
	for range 64 {
		seen[dial()]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Fatalf("connections per listener %v: want both to get some", seen)
	}
	a.Close()
	for i := range 16 {
		if name := dial(); name != "b" {
			t.Fatalf("connection %d after a closed went to %s", i, name)
		}
	}
}

func TestInUseHint(t *testing.T) {
	inUse := fmt.Errorf("listen tcp: %w", &net.OpError{Op: "listen", Err: syscall.EADDRINUSE})
	for _, c := range []struct {
		name      string
		err       error
		reusePort bool
		want      string
	}{
		{"taken, no option", inUse, false, " (replicas on one host: --reuse-port on each)"},
		{"taken with the option", inUse, true, " (held by a process of another user, or one bound without SO_REUSEPORT)"},
		{"another error", fmt.Errorf("listen tcp: %w", syscall.EACCES), false, ""},
	} {
		if got := inUseHint(c.err, c.reusePort); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
