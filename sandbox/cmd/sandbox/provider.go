package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The OVH variant's provider network: the hosting provider's own DHCP
// server (dnsmasq) on bridge br1 leases the machine's first NIC an
// address and hands the firmware's iPXE (Debian's: no params command) the
// provider's script, which moves to the NIC on herd's network and chains
// herd's generic entry point there, as OVH's does.

const (
	providerScriptName = "provider.ipxe"
	providerRange      = "10.89.0.100,10.89.0.199,255.255.255.0,1h"
)

// providerScript is what OVH's iPXE runs: give up net0, lease net1, name
// it in ${iface} (herd's auto.ipxe identifies the machine by that NIC's
// MAC) and chain herd.
func providerScript(herdHTTP string) string {
	return `#!ipxe
echo provider: handing this machine to herd on net1
ifclose net0
dhcp net1
set iface net1
chain --autofree http://` + herdHTTP + `/auto.ipxe
`
}

// dnsmasqArgs run the provider's DHCP and TFTP server on br1 only (no
// DNS), in the foreground, logging to stderr (logs/provider-dnsmasq.log).
func dnsmasqArgs(bin, dir string) []string {
	return []string{bin, "--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null", "--port=0",
		"--interface=" + providerBridge, "--bind-interfaces", "--except-interface=lo",
		"--dhcp-range=" + providerRange, "--dhcp-leasefile=" + filepath.Join(dir, "leases"),
		"--dhcp-authoritative", "--log-dhcp",
		// iPXE sends user class "iPXE": it gets the script by TFTP.
		"--dhcp-userclass=set:ipxe,iPXE", "--dhcp-boot=tag:ipxe," + providerScriptName + ",," + providerIP,
		"--enable-tftp", "--tftp-root=" + dir, "--tftp-secure",
		"--user=root", "--group=root", "--pid-file=" + filepath.Join(dir, "dnsmasq.pid")}
}

func (sb *sandbox) startProvider(ctx context.Context) error {
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		return fmt.Errorf("dnsmasq (Debian package dnsmasq-base; make deps): %w", err)
	}
	dir := filepath.Join(sb.dir, "provider")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, providerScriptName), []byte(providerScript(bootsHTTPHost())), 0o644); err != nil {
		return err
	}
	p, err := sb.startProc(spec{name: "provider-dnsmasq", netns: nsName, order: 45, args: dnsmasqArgs(bin, dir)})
	if err != nil {
		return err
	}
	return sb.waitLog(ctx, "provider-dnsmasq", "DHCP, IP range", p, 30*time.Second)
}

// bootsHTTPHost is herd-boots' HTTP root as machines reach it, without
// the default port.
func bootsHTTPHost() string {
	if h, p, ok := strings.Cut(bootsHTTP, ":"); ok && p == "80" {
		return h
	}
	return bootsHTTP
}

// followProvider tails the provider's dnsmasq log: its DHCP answers and
// the script it sends each machine's firmware.
func (sb *sandbox) followProvider(ctx context.Context, ps []*progress) {
	byIP := map[string]*progress{} // the provider's leases, as they come
	tail(ctx, sb.logPath("provider-dnsmasq"), func(line string) {
		ev, ok := parseDnsmasqLine(line)
		if !ok {
			return
		}
		p := byIP[ev.ip]
		for _, q := range ps {
			if ev.mac != "" && strings.EqualFold(ev.mac, q.m.ProviderMAC) {
				p = q
				byIP[ev.ip] = q
			}
		}
		if p == nil {
			return
		}
		sb.vmLine(p, "provider: %s", ev.text)
		if ev.tftp {
			p.mark("provider: iPXE script sent")
		}
	})
}

// dnsmasqEvent is a provider log line worth showing.
type dnsmasqEvent struct {
	mac, ip, text string
	tftp          bool
}

// parseDnsmasqLine reads dnsmasq's `DHCPACK(br1) 10.89.0.199 52:54:...`
// and `sent /dir/provider.ipxe to 10.89.0.199` lines.
func parseDnsmasqLine(line string) (dnsmasqEvent, bool) {
	f := strings.Fields(line)
	for i, w := range f {
		switch {
		case (strings.HasPrefix(w, "DHCPOFFER(") || strings.HasPrefix(w, "DHCPACK(")) && i+2 < len(f):
			kind := strings.TrimPrefix(w[:strings.IndexByte(w, '(')], "DHCP")
			return dnsmasqEvent{mac: f[i+2], ip: f[i+1], text: "DHCP " + kind + " " + f[i+1] + " (dnsmasq)"}, true
		case w == "sent" && i+3 < len(f) && f[i+2] == "to":
			return dnsmasqEvent{ip: f[i+3], text: "TFTP sent " + filepath.Base(f[i+1]) + " (dnsmasq)", tftp: true}, true
		}
	}
	return dnsmasqEvent{}, false
}
