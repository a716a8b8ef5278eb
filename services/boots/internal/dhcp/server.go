package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Listen opens a DHCP socket bound to the interface ifname (SO_BINDTODEVICE:
// packets arriving on any other interface never reach it) and to addr,
// normally 0.0.0.0:67 — a socket bound to a unicast address would miss the
// broadcasts clients without an address send. ifname "" binds no interface
// (for tests on loopback).
func Listen(ifname string, addr *net.UDPAddr) (net.PacketConn, error) {
	c, err := server4.NewIPv4UDPConn(ifname, addr)
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on interface %q %s: %w", ifname, addr, err)
	}
	// A rack powering on sends its DISCOVERs in a burst: room for a few
	// thousand requests in the kernel (rmem_max caps it quietly) instead
	// of the default ~200 KiB, which drops requests while the readers are
	// off the CPU.
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	return c, nil
}

const socketBuffer = 4 << 20

// maxPacket bounds a request: DHCP messages fit an Ethernet frame unless a
// client raises option 57, and none of boots' clients do past this.
const maxPacket = 4096

// Serve answers requests arriving on conn until ctx ends. onPXEPort marks
// a conn on port 4011 (proxyDHCP boot server requests).
//
// A UDP socket is served by one loop taking requests in batches (see
// batchLoop); any other conn by readers that each receive, decide and
// send in turn. Either way with buffers reused: no goroutine or buffer
// per packet (server4's loop spends more on those than on the answer).
func Serve(ctx context.Context, conn net.PacketConn, h *Handler, log *slog.Logger, onPXEPort bool) error {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = conn.Close()
		case <-done:
		}
	}()
	n := max(runtime.GOMAXPROCS(0), 2) // two: one decides while the other waits in recvfrom
	batched := false
	if _, ok := conn.(*net.UDPConn); ok && batchLoops > 0 {
		n, batched = batchLoops, true
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if batched {
				var ok bool
				if ok, errs[k] = serveBatched(conn.(*net.UDPConn), h, log, onPXEPort); ok {
					_ = conn.Close()
					return
				}
			}
			errs[k] = serveLoop(conn, h, log, onPXEPort)
			_ = conn.Close() // one reader failing ends them all
		}()
	}
	wg.Wait()
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("dhcp: serving %s: %w", conn.LocalAddr(), errors.Join(errs...))
}

// serveLoop is one reader; it returns the error that ended reading.
func serveLoop(conn net.PacketConn, h *Handler, log *slog.Logger, onPXEPort bool) error {
	uc, _ := conn.(*net.UDPConn)
	in := make([]byte, maxPacket)
	out := make([]byte, 0, maxPacket)
	var req dhcpv4.DHCPv4 // reused: parseInto points it into in
	for {
		var n int
		var peer netip.AddrPort
		var err error
		if uc != nil {
			n, peer, err = uc.ReadFromUDPAddrPort(in)
		} else {
			var a net.Addr
			n, a, err = conn.ReadFrom(in)
			if ua, ok := a.(*net.UDPAddr); ok {
				peer = ua.AddrPort()
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		if err := parseInto(&req, in[:n]); err != nil {
			continue // not DHCP: nothing to answer
		}
		reply, dst := h.AppendHandle(out[:0], &req, peer, onPXEPort)
		if reply == nil {
			continue
		}
		if uc != nil {
			_, err = uc.WriteToUDPAddrPort(reply, dst)
		} else {
			_, err = conn.WriteTo(reply, net.UDPAddrFromAddrPort(dst))
		}
		if err != nil {
			log.Warn("dhcp: sending reply", "mac", req.ClientHWAddr.String(), "to", dst.String(), "err", err)
		}
		out = reply[:0] // keep a grown buffer
	}
}
