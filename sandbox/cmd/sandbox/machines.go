package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// maxMachines keeps every VM's address inside 10.88.0.50-10.88.0.89 and
// its tap name short.
const maxMachines = 40

// machine is one VM the sandbox provisions.
type machine struct {
	N                     int // 1-based
	ID, MAC, IP, Hostname string
	// Tap is the VM's NIC on herd's network (bridge br0).
	Tap string
	// UEFI: the VM runs OVMF instead of SeaBIOS.
	UEFI bool
	// ProviderMAC and ProviderTap, when set (OVH), are a first NIC on
	// the provider's network (bridge br1): the firmware boots from it, the
	// provider's iPXE script moves to the NIC on herd's network.
	ProviderMAC, ProviderTap string
	// BMCIP, when set (--power ipmi), is where the machine's BMC answers
	// IPMI on the namespace's BMC network.
	BMCIP string
}

// withBMCs gives each machine a BMC address (--power ipmi).
func withBMCs(ms []machine) {
	for i := range ms {
		ms[i].BMCIP = bmcIP(ms[i].N)
	}
}

// newMachines lays out n VMs. hostname may hold %d (the machine's number);
// without it, machines after the first get -N appended.
func newMachines(n int, hostname string, uefi, ovh bool) ([]machine, error) {
	if n < 1 || n > maxMachines {
		return nil, fmt.Errorf("machines=%d: want 1 to %d", n, maxMachines)
	}
	out := make([]machine, n)
	for i := range out {
		last := 0x50 + i
		m := machine{
			N:    i + 1,
			ID:   fmt.Sprintf("5a4d0000-0000-4000-8000-5254008800%02x", last),
			MAC:  fmt.Sprintf("52:54:00:88:00:%02x", last),
			IP:   fmt.Sprintf("10.88.0.%d", 50+i),
			Tap:  "tap" + strconv.Itoa(i),
			UEFI: uefi,
		}
		switch {
		case strings.Contains(hostname, "%d"):
			m.Hostname = fmt.Sprintf(hostname, i+1)
		case i == 0:
			m.Hostname = hostname
		default:
			m.Hostname = fmt.Sprintf("%s-%d", hostname, i+1)
		}
		if ovh {
			m.ProviderMAC = fmt.Sprintf("52:54:00:89:00:%02x", last)
			m.ProviderTap = "ptap" + strconv.Itoa(i)
		}
		out[i] = m
	}
	return out, nil
}

// Debian's firmware for the VM. The iPXE ROM for e1000: QEMU 7.2's pc
// machine does not run efi-virtio.rom's legacy image (SeaBIOS skips the
// NIC). efi-e1000.rom holds both the legacy and the EFI build.
const (
	ipxeROM   = "/usr/lib/ipxe/qemu/efi-e1000.rom"
	ovmfCode  = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars  = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	vmDirName = "vm"
)

// vmFiles are one VM's files in the state directory; qmp is QEMU's QMP
// socket (the sandbox resets the VM through it: --fault osie-reboot).
type vmFiles struct{ disk, console, vars, qmp string }

func (sb *sandbox) vmFiles(m machine) vmFiles {
	d := filepath.Join(sb.dir, vmDirName, strconv.Itoa(m.N))
	f := vmFiles{disk: filepath.Join(d, "disk.raw"), console: filepath.Join(d, "console.log"), vars: filepath.Join(d, "OVMF_VARS.fd"),
		qmp: filepath.Join(d, "qmp.sock")}
	if len(f.qmp) >= maxUnixPath {
		f.qmp = "" // QEMU would refuse to start; no reset then (parseArgs refuses --fault)
	}
	return f
}

// maxUnixPath bounds a unix socket's path (sun_path: 108 bytes with its
// terminating NUL).
const maxUnixPath = 108

// qemuArgs is the VM's command line. Boot order is by bootindex (SeaBIOS
// and OVMF both follow it; -boot order does not apply to these devices):
// the NIC that netboots first, then the disk. Once netboot is switched off
// for the machine, iPXE gets no boot file (or herd's script exits) and the
// firmware boots the disk.
func qemuArgs(qemu string, m machine, f vmFiles, memMiB, smp int) []string {
	args := []string{qemu, "-name", "herd-sbx-vm" + strconv.Itoa(m.N), "-machine", "pc", "-accel", "tcg",
		"-m", strconv.Itoa(memMiB), "-smp", strconv.Itoa(smp),
		"-display", "none", "-vga", "none", "-monitor", "none", "-serial", "file:" + f.console,
		"-device", "virtio-rng-pci"}
	if f.qmp != "" {
		args = append(args, "-qmp", "unix:"+f.qmp+",server=on,wait=off")
	}
	if m.UEFI {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+f.vars,
			// OVMF's own PXE and HTTP boot would retry DHCP for minutes
			// on the NIC once herd answers without a boot file; iPXE (the
			// NIC's ROM) is the network boot, then the disk.
			"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=n")
	}
	// Fixed PCI slots: firmware and iPXE name NICs in bus order, so the
	// provider's NIC is net0 and herd's is net1, as at OVH.
	if m.ProviderMAC != "" {
		args = append(args,
			"-netdev", "tap,id=n0,ifname="+m.ProviderTap+",script=no,downscript=no",
			"-device", "e1000,netdev=n0,mac="+m.ProviderMAC+",romfile="+ipxeROM+",bootindex=1,addr=0x10",
			"-netdev", "tap,id=n1,ifname="+m.Tap+",script=no,downscript=no",
			// No ROM of its own: the provider NIC's iPXE drives it.
			"-device", "e1000,netdev=n1,mac="+m.MAC+",romfile=,addr=0x11")
	} else {
		args = append(args,
			"-netdev", "tap,id=n0,ifname="+m.Tap+",script=no,downscript=no",
			"-device", "e1000,netdev=n0,mac="+m.MAC+",romfile="+ipxeROM+",bootindex=1,addr=0x10")
	}
	return append(args,
		"-drive", "file="+f.disk+",format=raw,if=none,id=disk0",
		"-device", "virtio-blk-pci,drive=disk0,bootindex=2,addr=0x12")
}

// firmware names the VM's boot path for the terminal.
func (m machine) firmware() string {
	s := "SeaBIOS"
	if m.UEFI {
		s = "OVMF (UEFI)"
	}
	if m.ProviderMAC != "" {
		s += ", provider NIC " + m.ProviderMAC + " first (OVH)"
	}
	return s
}
