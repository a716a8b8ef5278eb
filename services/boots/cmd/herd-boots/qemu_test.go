package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// The stand-in OSIE kernel is Debian's ipxe.lkrn, a bzImage: once booted it
// prints its banner again and runs its kernel command line as a command,
// so the console shows both that the kernel booted and what command line
// it got ("grpc_authority=...: command not found").

// TestQEMUFirmware netboots Debian's iPXE ROM (no params command) in QEMU
// (TCG) through herd-boots: DHCP -> auto.ipxe -> the machine's script ->
// kernel + initrd over HTTP -> boot, with ipxe-params off and auto under
// SeaBIOS, and under UEFI (OVMF), where the firmware's own PXE first
// fetches ipxe.efi over TFTP (option 93 = 7).
func TestQEMUFirmware(t *testing.T) {
	qemu := realtest.Command(t, "qemu-system-x86_64")
	rom := "/usr/lib/ipxe/qemu/efi-e1000.rom" // Debian ipxe-qemu; its virtio ROM does not start under SeaBIOS here
	for _, f := range []string{rom, "/usr/lib/ipxe/ipxe.lkrn", "/usr/lib/ipxe/ipxe.efi", "/usr/lib/ipxe/undionly.kpxe", ovmf} {
		realtest.File(t, f)
	}
	for _, tc := range []struct {
		name, params string
		uefi         bool
	}{{"bios-off", "off", false}, {"bios-auto", "auto", false}, {"uefi-auto", "auto", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each lab has its own namespaces
			// The stand-in kernel is iPXE itself: ipxe.lkrn (a bzImage) under
			// BIOS, ipxe.efi under UEFI.
			kernel := "/usr/lib/ipxe/ipxe.lkrn"
			if tc.uefi {
				kernel = "/usr/lib/ipxe/ipxe.efi"
			}
			k, err := os.ReadFile(kernel)
			if err != nil {
				t.Fatal(err)
			}
			osie := t.TempDir()
			os.WriteFile(filepath.Join(osie, "vmlinuz-x86_64"), k, 0o644)
			os.WriteFile(filepath.Join(osie, "initramfs-x86_64"), []byte("stand-in initramfs"), 0o644)
			l := newLab(t, nil, "--ipxe-params", tc.params, "--osie-dir", osie, "--console", "ttyS0")
			mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xcc, 0x00, 0x01}
			l.push(t, hwKnown, mac, "10.77.0.10", true, "")
			l.waitMachines(t, 1)
			args := []string{"-device", "e1000,netdev=n0,mac=" + mac.String() + ",romfile=" + rom + ",bootindex=1",
				"-netdev", "tap,id=n0,ifname=tp0,script=no,downscript=no"}
			if tc.uefi {
				// No iPXE ROM: OVMF's own virtio-net driver and PXE client.
				args = []string{"-bios", ovmf, "-device", "virtio-net-pci,netdev=n0,mac=" + mac.String() + ",romfile=,bootindex=1",
					"-netdev", "tap,id=n0,ifname=tp0,script=no,downscript=no"}
			}
			out := runVM(t, l, qemu, args...)
			logs := l.log.String()
			defer func() {
				if t.Failed() || os.Getenv("HERD_TEST_CONSOLE") != "" {
					t.Logf("console:\n%s", out)
				}
			}()
			for _, want := range []string{"herd: auto.ipxe", "herd: identifying as 52-54-00-cc-00-01 (interface net0)",
				"herd: hardware " + hwKnown, "herd: booting", "/osie/vmlinuz-x86_64... ok", "/osie/initramfs-x86_64... ok"} {
				if !strings.Contains(out, want) {
					t.Errorf("console lacks %q", want)
				}
			}
			// After "herd: booting" the stand-in kernel runs: a second iPXE
			// banner (under BIOS, with our command line run as a command).
			_, after, _ := strings.Cut(out, "herd: booting")
			if !strings.Contains(after, "iPXE") || (!tc.uefi && !strings.Contains(after, "grpc_authority="+l.server.GRPC)) {
				t.Errorf("the OSIE kernel did not boot with our command line")
			}
			// Recorded, not refused: a refused event logs its name too.
			wantLogs := []string{"ipxe script served", `msg="boot event" event=kernel_fetched`, `msg="boot event" event=initrd_fetched`}
			if tc.uefi {
				wantLogs = append(wantLogs, "boot_file=ipxe.efi", "tftp: sent")
			}
			for _, want := range wantLogs {
				if !strings.Contains(logs, want) {
					t.Errorf("herd-boots log lacks %q", want)
				}
			}
			if tc.params == "auto" && !strings.Contains(out, "params: command not found") {
				t.Errorf("auto: the params fallback never ran")
			}
			if tc.params == "off" && strings.Contains(out, "params") {
				t.Errorf("off: a params command ran")
			}
		})
	}
}

// ovmf is Debian's UEFI firmware for QEMU (package ovmf).
const ovmf = "/usr/share/ovmf/OVMF.fd"

// runVM boots a BIOS QEMU VM in the boots namespace with the given NIC
// arguments and returns its console once it ends or reaches a dead end.
func runVM(t *testing.T, l *lab, qemu string, nics ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	console := &syncBuffer{}
	args := append([]string{"-machine", "pc", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", "-monitor", "none", "-boot", "n"}, nics...)
	cmd := l.srv.Command(ctx, qemu, args...)
	cmd.Stdout, cmd.Stderr = console, console
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The VM ends itself (reboot with -no-reboot); stop it early on a dead
	// end.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var kernelAt time.Time
	for {
		select {
		case <-done:
			return console.String()
		case <-ctx.Done():
			<-done
			return console.String()
		case <-tick.C:
			// The stand-in kernel (iPXE) started: under BIOS it runs its
			// command line at once; under UEFI it hangs on the NIC the first
			// iPXE still holds. A few seconds after it starts is enough.
			c := console.String()
			_, after, booted := strings.Cut(c, "herd: booting")
			kernel := booted && strings.Contains(after, "iPXE initialising devices")
			if kernel && kernelAt.IsZero() {
				kernelAt = time.Now()
			}
			if strings.Contains(c, "No bootable device") || strings.Contains(c, "giving up") ||
				(kernel && (strings.Contains(after, "command not found") || time.Since(kernelAt) > 5*time.Second)) {
				cancel()
			}
		}
	}
}
