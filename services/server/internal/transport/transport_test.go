package transport

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// TestHeaderMatcher: no HTTP header can pose as the gateway's peer
// address; the others map as grpc-gateway's default does (which forwards
// no Grpc-Metadata- header any more; the filter holds should that change).
func TestHeaderMatcher(t *testing.T) {
	for key, want := range map[string]string{
		"Grpc-Metadata-X-Herd-Peer": "",
		"grpc-metadata-x-herd-peer": "",
		"Grpc-Metadata-Trace":       "",
		"Authorization":             "grpcgateway-Authorization",
		"X-Herd-Peer":               "",
	} {
		got, ok := headerMatcher(key)
		if got != want || ok != (want != "") {
			t.Errorf("headerMatcher(%q) = %q, %v; want %q", key, got, ok, want)
		}
	}
}

func TestPeer(t *testing.T) {
	tcp := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("10.0.0.7"), Port: 4711}})
	// A gRPC client's own x-herd-peer is not believed.
	tcp = metadata.NewIncomingContext(tcp, metadata.Pairs(peerKey, "6.6.6.6:1"))
	gw := peer.NewContext(context.Background(), &peer.Peer{Addr: memAddr{}})
	for name, c := range map[string]struct {
		ctx  context.Context
		want string
	}{
		"gRPC client":        {tcp, "10.0.0.7:4711"},
		"REST client":        {metadata.NewIncomingContext(gw, metadata.Pairs(peerKey, "10.0.0.8:80")), "10.0.0.8:80"},
		"in-process, no key": {gw, "in-process"},
		"no peer":            {context.Background(), "unknown"},
	} {
		if got := Peer(c.ctx); got != c.want {
			t.Errorf("%s: Peer = %q, want %q", name, got, c.want)
		}
	}
}

// TestLimitSources: the listener holds each address to max open
// connections and gives a slot back when one closes.
func TestLimitSources(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	l := limitSources(inner, 2, func(netip.Addr) { refused.Add(1) })
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	wait := func() net.Conn {
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
		}
		return nil
	}
	a := wait2(dial, wait, "127.0.0.1")
	wait2(dial, wait, "127.0.0.1")
	third := dial("127.0.0.1")
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err == nil || refused.Load() != 1 {
		t.Fatalf("third connection from one address: read %v, %d refused", err, refused.Load())
	}
	wait2(dial, wait, "127.0.0.2")
	a.Close()
	a.Close() // a second Close gives nothing back twice
	wait2(dial, wait, "127.0.0.1")
	if n := len(l.(*sourceLimit).open); n != 2 {
		t.Fatalf("%d addresses tracked, want 2", n)
	}
}

// wait2 dials from src and returns the server's side once accepted.
func wait2(dial func(string) net.Conn, wait func() net.Conn, src string) net.Conn {
	dial(src)
	return wait()
}
