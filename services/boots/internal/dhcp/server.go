package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"

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
	return c, nil
}

// Serve answers requests arriving on conn until ctx ends. onPXEPort marks
// a conn on port 4011 (proxyDHCP boot server requests).
func Serve(ctx context.Context, conn net.PacketConn, h *Handler, log *slog.Logger, onPXEPort bool) error {
	srv, err := server4.NewServer("", nil, func(c net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		up, _ := peer.(*net.UDPAddr)
		reply, dst := h.Handle(req, up, onPXEPort)
		if reply == nil {
			return
		}
		if _, err := c.WriteTo(reply.ToBytes(), dst); err != nil {
			log.Warn("dhcp: sending reply", "mac", req.ClientHWAddr.String(), "to", dst.String(), "err", err)
		}
	}, server4.WithConn(conn))
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = srv.Close()
		case <-done:
		}
	}()
	err = srv.Serve()
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("dhcp: serving %s: %w", conn.LocalAddr(), err)
}
