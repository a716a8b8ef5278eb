package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The thin wrappers over the system calls; the decisions are in the pure
// functions of config.go, disk.go and netcfg.go.

// mountBase mounts what the program needs: /proc (the command line),
// /sys (block devices), /dev (device nodes, the console).
func mountBase() []error {
	var errs []error
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fs, m.dst, err))
		}
	}
	return errs
}

// openConsole makes /dev/console stdout and stderr: an initramfs without
// a /dev/console node leaves the first process with no output at all.
func openConsole() {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	_ = unix.Dup2(int(f.Fd()), 1)
	_ = unix.Dup2(int(f.Fd()), 2)
	_ = f.Close()
}

// loadModules loads the module list in order with finit_module; a module
// already loaded is fine, one whose hardware is absent (ENODEV: a
// CPU-specific crypto module such as crc32c-intel under QEMU TCG) is
// counted as skipped, any other failure is reported.
func loadModules(list string) (loaded, skipped int, errs []error) {
	f, err := os.Open(list)
	if err != nil {
		return 0, 0, []error{err}
	}
	files, err := ParseModuleList(f)
	_ = f.Close()
	if err != nil {
		return 0, 0, []error{err}
	}
	for _, file := range files {
		m, err := os.Open(file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = unix.FinitModule(int(m.Fd()), "", 0)
		_ = m.Close()
		switch {
		case errors.Is(err, unix.ENODEV):
			skipped++
		case err != nil && !errors.Is(err, unix.EEXIST):
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(file), err))
		default:
			loaded++
		}
	}
	return loaded, skipped, errs
}

// blockDevices lists /dev/NAME for every disk and partition in sysfs.
func blockDevices() []string {
	entries, _ := os.ReadDir("/sys/class/block")
	devs := make([]string, 0, len(entries))
	for _, e := range entries {
		devs = append(devs, "/dev/"+e.Name())
	}
	sort.Strings(devs)
	return devs
}

func readHead(dev string) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 2048)
	_, err = io.ReadFull(f, b)
	return b, err
}

// readInstalledHostname finds the root partition (waiting for the disk
// driver to probe), mounts it read-only, reads the hostname file and
// unmounts it.
func readInstalledHostname(ctx context.Context, c Config) (string, string, error) {
	var dev string
	for {
		d, err := FindRoot(c.Root, blockDevices(), readHead)
		if err == nil {
			dev = d
			break
		}
		select {
		case <-ctx.Done():
			return "", "", err
		case <-time.After(200 * time.Millisecond):
		}
	}
	const mnt = "/mnt/root"
	_ = os.MkdirAll(mnt, 0o755)
	if err := unix.Mount(dev, mnt, "ext4", unix.MS_RDONLY, ""); err != nil {
		return "", dev, fmt.Errorf("mount %s: %w", dev, err)
	}
	defer func() { _ = unix.Unmount(mnt, 0) }()
	f, err := os.Open(filepath.Join(mnt, c.HostnameFile))
	if err != nil {
		return "", dev, fmt.Errorf("%s on %s: %w", c.HostnameFile, dev, err)
	}
	defer f.Close()
	name, err := ParseHostname(f)
	if err != nil {
		return "", dev, fmt.Errorf("%s on %s: %w", c.HostnameFile, dev, err)
	}
	return name, dev, nil
}

// leaseTimeout bounds the DHCP exchange on one NIC: a NIC on a network
// without a DHCP server costs this much, once, and no more.
const leaseTimeout = 15 * time.Second

// bringUpNetwork leases an address on every Ethernet NIC at once with
// nclient4 (no shell, no hook script), sets each address, one default
// route (DefaultRoute) and resolv.conf, and returns the leases in NIC
// order. It retries until at least one NIC has a lease or ctx ends.
func bringUpNetwork(ctx context.Context, logf func(string, ...any)) ([]Lease, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	for {
		links, err := ethernetLinks(ctx)
		if err != nil {
			return nil, err
		}
		if leases := leaseAll(ctx, links, logf); len(leases) > 0 {
			if d, ok := DefaultRoute(leases); ok {
				route := &netlink.Route{LinkIndex: d.Index, Gw: d.Gateway.AsSlice(),
					Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
				if err := netlink.RouteReplace(route); err != nil {
					logf("warning: default route via %s on %s: %v", d.Gateway, d.NIC, err)
				} else {
					logf("default route via %s on %s", d.Gateway, d.NIC)
				}
			}
			cfgs := make([]NetConfig, len(leases))
			for i, l := range leases {
				cfgs[i] = l.NetConfig
			}
			_ = os.MkdirAll("/etc", 0o755)
			_ = os.WriteFile("/etc/resolv.conf", []byte(ResolvConf(cfgs...)), 0o644)
			return leases, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no DHCP lease on any NIC: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// ethernetLinks waits until the Ethernet NICs are there: at least one,
// and the same number twice in a row (drivers loaded, devices probed).
func ethernetLinks(ctx context.Context) ([]netlink.Link, error) {
	prev := -1
	for {
		all, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		var links []netlink.Link
		for _, l := range all {
			if l.Type() == "device" && l.Attrs().EncapType == "ether" {
				links = append(links, l)
			}
		}
		if len(links) > 0 && len(links) == prev {
			sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
			return links, nil
		}
		prev = len(links)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no Ethernet NIC: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// leaseAll runs a DHCP client on each link concurrently and returns the
// leases it got, in link order.
func leaseAll(ctx context.Context, links []netlink.Link, logf func(string, ...any)) []Lease {
	type result struct {
		lease Lease
		err   error
	}
	results := make([]result, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg, err := leaseOn(ctx, l)
			results[i] = result{Lease{NIC: l.Attrs().Name, Index: l.Attrs().Index, NetConfig: cfg}, err}
		}()
	}
	wg.Wait()
	var leases []Lease
	for i, r := range results {
		if r.err != nil {
			a := links[i].Attrs()
			logf("no DHCP lease on %s (%s): %v", a.Name, a.HardwareAddr, r.err)
			continue
		}
		logf("%s", LeaseLine(r.lease, links[i].Attrs().HardwareAddr))
		leases = append(leases, r.lease)
	}
	return leases
}

// leaseOn leases an address on one link and sets it (routes are set once
// all leases are in).
func leaseOn(ctx context.Context, l netlink.Link) (NetConfig, error) {
	name := l.Attrs().Name
	if err := netlink.LinkSetUp(l); err != nil {
		return NetConfig{}, fmt.Errorf("set %s up: %w", name, err)
	}
	c, err := nclient4.New(name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return NetConfig{}, err
	}
	defer c.Close()
	lctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	defer cancel()
	lease, err := c.Request(lctx)
	if err != nil {
		return NetConfig{}, err
	}
	cfg, err := LeaseConfig(lease.ACK)
	if err != nil {
		return cfg, err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.Addr.Addr().AsSlice(), Mask: net.CIDRMask(cfg.Addr.Bits(), 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return cfg, fmt.Errorf("set address %s on %s: %w", cfg.Addr, name, err)
	}
	return cfg, nil
}

// powerOff syncs the disks and powers off (or reboots); as the first
// process it must never return.
func powerOff(after string) {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if after == "reboot" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	_ = unix.Reboot(cmd)
	for {
		time.Sleep(time.Hour)
	}
}

func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
