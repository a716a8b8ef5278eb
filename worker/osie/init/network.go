package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vendorClass tells a DHCP server the request comes from the OSIE, not
// from PXE firmware (option 60).
const vendorClass = "herd-osie"

// bootLease is the result of bringing the boot NIC up.
type bootLease struct {
	nic    NIC
	cfg    NetConfig
	lease  *nclient4.Lease
	client *nclient4.Client
}

// listNICs reads the interfaces through netlink.
func listNICs() ([]NIC, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	nics := make([]NIC, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		nics = append(nics, NIC{Name: a.Name, MAC: a.HardwareAddr, Ether: a.EncapType == "ether" && l.Type() == "device"})
	}
	return nics, nil
}

// bringUpNetwork sets lo up and leases an address on the boot NIC: each
// round lists the interfaces again (drivers may still be probing) and asks
// for a lease on every candidate at once; the first to get one wins.
func bringUpNetwork(ctx context.Context, log *slog.Logger, bootMAC net.HardwareAddr, debug bool) (*bootLease, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	for round := 1; ; round++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("no DHCP lease: %w", err)
		}
		nics, err := listNICs()
		if err != nil {
			return nil, err
		}
		cands := CandidateNICs(nics, bootMAC)
		if len(cands) == 0 {
			if round%10 == 1 {
				log.Warn("no network interface to configure yet", "boot_mac", macString(bootMAC), "interfaces", len(nics))
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if l := leaseAny(ctx, log, cands, debug); l != nil {
			return l, nil
		}
	}
}

func leaseAny(ctx context.Context, log *slog.Logger, cands []NIC, debug bool) *bootLease {
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	results := make(chan *bootLease, len(cands))
	for _, n := range cands {
		go func() { results <- leaseOne(rctx, log, n, debug) }()
	}
	var won *bootLease
	for range cands {
		l := <-results
		if l == nil {
			continue
		}
		if won == nil {
			won = l
			cancel() // the others stop asking
		} else {
			_ = l.client.Close()
		}
	}
	return won
}

func leaseOne(ctx context.Context, log *slog.Logger, n NIC, debug bool) *bootLease {
	log = log.With("nic", n.Name, "mac", n.MAC.String())
	link, err := netlink.LinkByName(n.Name)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		log.Warn("cannot set the interface up", "err", err)
		return nil
	}
	opts := []nclient4.ClientOpt{nclient4.WithTimeout(2 * time.Second), nclient4.WithRetry(4)}
	if debug {
		opts = append(opts, nclient4.WithSummaryLogger())
	}
	c, err := nclient4.New(n.Name, opts...)
	if err != nil {
		log.Warn("cannot open a DHCP client", "err", err)
		return nil
	}
	log.Info("asking for a DHCP lease")
	lease, err := c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendorClass)))
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) {
			log.Warn("no DHCP lease", "err", err)
		}
		_ = c.Close()
		return nil
	}
	cfg, err := LeaseConfig(lease.ACK)
	if err != nil {
		log.Warn("unusable DHCP lease", "err", err)
		_ = c.Close()
		return nil
	}
	return &bootLease{nic: n, cfg: cfg, lease: lease, client: c}
}

// applyNetConfig sets the address, MTU, default route, resolv.conf and
// host name of a lease.
func applyNetConfig(nic string, c NetConfig) error {
	link, err := netlink.LinkByName(nic)
	if err != nil {
		return fmt.Errorf("interface %s: %w", nic, err)
	}
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(link, c.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", c.MTU, nic, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Addr.Addr().AsSlice(), Mask: net.CIDRMask(c.Addr.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", c.Addr, nic, err)
	}
	if c.Gateway.IsValid() {
		route := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Gw:        c.Gateway.AsSlice(),
		}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("set default route via %s: %w", c.Gateway, err)
		}
	}
	if err := os.WriteFile("/etc/resolv.conf", []byte(ResolvConf(c)), 0o644); err != nil {
		return err
	}
	if c.Hostname != "" {
		if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
			return fmt.Errorf("set host name %q: %w", c.Hostname, err)
		}
		_ = os.WriteFile("/etc/hostname", []byte(c.Hostname+"\n"), 0o644)
	}
	return nil
}

// keepLease renews the lease at T1 until ctx ends; a failed renewal is
// retried a minute later (the address stays set meanwhile).
func keepLease(ctx context.Context, log *slog.Logger, l *bootLease) {
	lease := l.lease
	wait := RenewAfter(l.cfg.Lease)
	if wait == 0 {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		nl, err := l.client.Renew(ctx, lease, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendorClass)))
		if err != nil {
			log.Warn("DHCP renewal failed", "nic", l.nic.Name, "err", err)
			wait = time.Minute
			continue
		}
		lease = nl
		cfg, err := LeaseConfig(nl.ACK)
		if err == nil {
			wait = RenewAfter(cfg.Lease)
			log.Info("DHCP lease renewed", "nic", l.nic.Name, "addr", cfg.Addr.String(), "lease", cfg.Lease)
		}
	}
}

func macString(m net.HardwareAddr) string {
	if m == nil {
		return ""
	}
	return m.String()
}
