package osimage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ciRequire fails under CI=true and skips elsewhere when a real part is missing.
func ciRequire(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %v (make deps installs what sandbox/osimage/deps.txt lists)", what, err)
	}
	t.Skipf("%s: %v (make deps installs what sandbox/osimage/deps.txt lists)", what, err)
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		ciRequire(t, tool, err)
	}
}

func TestBuildScriptIsShellcheckClean(t *testing.T) {
	requireTools(t, "shellcheck")
	out, err := exec.Command("shellcheck", "build.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck build.sh: %v\n%s", err, out)
	}
}

// metadataStub is a tiny herd-metadata: the EC2-style host name only.
type metadataStub struct {
	mu   sync.Mutex
	hits int
}

func (m *metadataStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/2009-04-04/meta-data/hostname" {
		http.NotFound(w, r)
		return
	}
	m.mu.Lock()
	m.hits++
	m.mu.Unlock()
	_, _ = io.WriteString(w, "vm-from-metadata")
}

// build runs build.sh into a temporary folder.
func build(t *testing.T, metadataURL string) (out string, layout map[string]string) {
	t.Helper()
	requireTools(t, "dpkg-deb", "modprobe", "cpio", "zstd", "sfdisk", "mkfs.vfat", "mcopy", "mmd", "syslinux", "mke2fs", "gzip")
	for what, f := range map[string]string{
		"syslinux's mbr.bin":                    "/usr/lib/syslinux/mbr/mbr.bin",
		"syslinux.efi (package syslinux-efi)":   "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi",
		"ldlinux.e64 (package syslinux-common)": "/usr/lib/syslinux/modules/efi64/ldlinux.e64",
	} {
		_, err := os.Stat(f)
		ciRequire(t, what, err)
	}
	out = filepath.Join(t.TempDir(), "out")
	cmd := exec.Command("sh", "build.sh")
	cmd.Env = append(os.Environ(), "OUT="+out, "METADATA_URL="+metadataURL)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	start := time.Now()
	if err := cmd.Run(); err != nil {
		if strings.Contains(log.String(), "no kernel package") {
			ciRequire(t, "the Debian kernel package", fmt.Errorf("%v\n%s", err, log.String()))
		}
		t.Fatalf("build.sh: %v\n%s", err, log.String())
	}
	t.Logf("build.sh took %s:\n%s", time.Since(start).Round(100*time.Millisecond), log.String())
	b, err := os.ReadFile(filepath.Join(out, "layout.env"))
	if err != nil {
		t.Fatal(err)
	}
	layout = map[string]string{}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			layout[k] = strings.Trim(v, `"`)
		}
	}
	return out, layout
}

// checkLayout reads the MBR as firmware and syslinux's boot code do.
func checkLayout(t *testing.T, disk string, layout map[string]string) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := io.ReadFull(f, mbr); err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile("/usr/lib/syslinux/mbr/mbr.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mbr[:440], code[:440]) {
		t.Error("sector 0 does not start with syslinux's mbr.bin")
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		t.Errorf("no MBR signature: % x", mbr[510:])
	}
	if id := binary.LittleEndian.Uint32(mbr[440:]); id != 0x68657264 {
		t.Errorf("disk identifier %#x, want 0x68657264", id)
	}
	type part struct {
		boot, typ   byte
		start, size int64
	}
	entry := func(i int) part {
		e := mbr[446+16*i:]
		return part{e[0], e[4], int64(binary.LittleEndian.Uint32(e[8:])) * 512, int64(binary.LittleEndian.Uint32(e[12:])) * 512}
	}
	num := func(k string) int64 { n, _ := strconv.ParseInt(layout[k], 10, 64); return n }
	if p := entry(0); p != (part{0x80, 0x0e, num("BOOT_OFFSET"), num("BOOT_SIZE")}) {
		t.Errorf("partition 1: %+v, want bootable FAT16 LBA at BOOT_OFFSET", p)
	}
	if p := entry(1); p != (part{0x00, 0x83, num("ROOT_OFFSET"), num("ROOT_SIZE")}) {
		t.Errorf("partition 2: %+v, want Linux at ROOT_OFFSET", p)
	}
	// The ext4 superblock of partition 2 and its label.
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, num("ROOT_OFFSET")+1024); err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 || string(bytes.TrimRight(sb[0x78:0x88], "\x00")) != "herd-root" {
		t.Error("partition 2 holds no ext file system labelled herd-root")
	}
}

func sha(t *testing.T, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// debugfs runs debugfs requests on partition 2 of disk, unmounted, as the
// writefile action changes the installed disk (it mounts; a test need not).
func debugfs(t *testing.T, disk, offset string, write bool, requests ...string) string {
	t.Helper()
	args := []string{"-f", "-"}
	if write {
		args = append([]string{"-w"}, args...)
	}
	cmd := exec.Command("debugfs", append(args, disk+"?offset="+offset)...)
	cmd.Stdin = strings.NewReader(strings.Join(requests, "\n") + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs %q: %v\n%s%s", requests, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// fsckRoot checks partition 2 with e2fsck -fn (on a copy: e2fsck takes
// no offset).
func fsckRoot(t *testing.T, disk string, layout map[string]string) {
	t.Helper()
	off, _ := strconv.ParseInt(layout["ROOT_OFFSET"], 10, 64)
	size, _ := strconv.ParseInt(layout["ROOT_SIZE"], 10, 64)
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	part := filepath.Join(t.TempDir(), "root.ext4")
	p, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(p, io.NewSectionReader(f, off, size)); err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	if out, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn on partition 2: %v\n%s", err, out)
	}
}

// bootResult is what one boot showed on the serial console.
type bootResult struct {
	console string
	wall    time.Duration
}

// Debian's OVMF (package ovmf): the firmware code, read-only, and the
// template of its variable store, copied for each VM (OVMF writes its
// boot entries there).
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// requireOVMF fails under CI=true, skips elsewhere, without OVMF.
func requireOVMF(t *testing.T) {
	t.Helper()
	for _, f := range []string{ovmfCode, ovmfVars} {
		_, err := os.Stat(f)
		ciRequire(t, "OVMF "+f+" (Debian package ovmf)", err)
	}
}

// vm is one test VM: its disk, firmware and NICs.
type vm struct {
	disk string
	uefi bool     // OVMF instead of SeaBIOS
	pc   bool     // -machine pc (what the sandbox runs) instead of q35
	nics []string // QEMU arguments of the NICs; default: QEMU user networking
	ns   string   // network namespace QEMU runs in ("": the test's)
}

// qemuPath escapes a path for a QEMU option value, where a comma ends
// the value unless doubled (test folders are named after the test).
func qemuPath(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// boot starts QEMU on the VM's disk (TCG; by default user networking: its
// DHCP server and 10.0.2.2 = the host's loopback) and waits for the guest
// to power off.
func boot(t *testing.T, v vm) bootResult {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	ciRequire(t, "qemu-system-x86_64", err)
	dir := t.TempDir()
	consoleLog := filepath.Join(dir, "console.log")
	machine := "q35"
	if v.pc {
		machine = "pc"
	}
	args := []string{
		"-machine", machine, "-accel", "tcg", "-m", "512", "-smp", "1",
		"-nographic", "-monitor", "none", "-serial", "file:" + consoleLog, "-no-reboot",
		"-drive", "file=" + qemuPath(v.disk) + ",format=raw,if=none,id=disk0",
		"-device", "virtio-blk-pci,drive=disk0,bootindex=1",
		"-device", "virtio-rng-pci",
	}
	if v.uefi {
		requireOVMF(t)
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		copyFile(t, ovmfVars, vars)
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+qemuPath(vars))
	}
	if v.nics == nil {
		args = append(args, "-nic", "user,model=virtio-net-pci,mac=52:54:00:12:34:57")
	}
	args = append(args, v.nics...)
	var cmd *exec.Cmd
	if v.ns != "" {
		// ip netns exec execs QEMU: the pid is QEMU's.
		cmd = exec.Command("ip", append([]string{"netns", "exec", v.ns, qemu}, args...)...)
	} else {
		cmd = exec.Command(qemu, args...)
	}
	var qout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qout, &qout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(4 * time.Minute):
		_ = cmd.Process.Kill() // our own QEMU, by its pid
		<-done
		b, _ := os.ReadFile(consoleLog)
		t.Fatalf("QEMU still running after 4 minutes; console:\n%s", b)
	}
	wall := time.Since(start)
	b, _ := os.ReadFile(consoleLog)
	if err != nil {
		t.Fatalf("QEMU: %v\n%s\nconsole:\n%s", err, qout.String(), b)
	}
	return bootResult{console: string(b), wall: wall}
}

// A firstboot line; the first one follows the firmware's terminal escapes.
var uptimeRE = regexp.MustCompile(`\[ *([0-9.]+)\] firstboot: `)

// stamp is the guest uptime of the first firstboot line holding s.
func stamp(console, s string) string {
	sc := bufio.NewScanner(strings.NewReader(console))
	for sc.Scan() {
		line := sc.Text()
		if m := uptimeRE.FindStringSubmatch(line); m != nil && strings.Contains(line, s) {
			return m[1] + "s"
		}
	}
	return "never"
}

// TestImageBootsInQEMU builds the image, checks its layout, and boots it
// in QEMU: with SeaBIOS as built, with SeaBIOS after /etc/hostname on
// partition 2 was replaced without mounting (what writefile does on the
// real disk), and with OVMF (UEFI) after the same change. Each time the
// first-boot program must report the host name that the metadata stub
// (reached at 10.0.2.2, QEMU's alias of the host's loopback) serves and
// the one in the file.
func TestImageBootsInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs: a minute under TCG")
	}
	requireTools(t, "qemu-system-x86_64", "debugfs", "e2fsck", "mtype")
	stub := &metadataStub{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: stub, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	out, layout := build(t, fmt.Sprintf("http://10.0.2.2:%d", port))
	disk := filepath.Join(out, "disk.img")
	checkLayout(t, disk, layout)
	checkEFI(t, disk, layout)
	if want := fmt.Sprintf("herd.metadata=http://10.0.2.2:%d", port); !strings.Contains(layout["CMDLINE"], want) {
		t.Errorf("kernel command line %q lacks %q", layout["CMDLINE"], want)
	}
	// disk.img.gz is disk.img, for image2disk with COMPRESSED=true.
	raw, _ := os.Open(disk)
	defer raw.Close()
	gz, _ := os.Open(disk + ".gz")
	defer gz.Close()
	zr, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatal(err)
	}
	if sha(t, zr) != sha(t, raw) {
		t.Error("disk.img.gz does not decompress to disk.img")
	}
	if got := debugfs(t, disk, layout["ROOT_OFFSET"], false, "cat /etc/hostname"); !strings.Contains(got, "herd-unprovisioned") {
		t.Errorf("/etc/hostname as built: %q", got)
	}
	fsckRoot(t, disk, layout)

	cases := []struct {
		name, file string
		uefi       bool
	}{
		{"SeaBIOS as built", "", false},
		{"SeaBIOS after writefile", "provisioned-vm-7", false},
		{"OVMF after writefile", "provisioned-uefi-8", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.uefi {
				requireOVMF(t)
			}
			img := filepath.Join(t.TempDir(), "disk.img")
			copyFile(t, disk, img)
			want := "herd-unprovisioned"
			if tc.file != "" {
				writeHostname(t, img, layout, tc.file)
				want = tc.file
			}
			// OVMF on the pc machine, as the sandbox runs it.
			r := boot(t, vm{disk: img, uefi: tc.uefi, pc: tc.uefi})
			marker := "herd-installed-os: hostname=vm-from-metadata (metadata) file=" + want
			if !strings.Contains(r.console, marker) {
				t.Fatalf("console lacks %q:\n%s", marker, r.console)
			}
			if !strings.Contains(r.console, "reboot: Power down") {
				t.Errorf("the guest did not power off:\n%s", r.console)
			}
			logTimes(t, r)
		})
	}
	t.Cleanup(func() {
		stub.mu.Lock()
		defer stub.mu.Unlock()
		if !t.Failed() && stub.hits < len(cases) {
			t.Errorf("the metadata stub was asked %d times, want %d (one per boot)", stub.hits, len(cases))
		}
	})
}

// writeHostname replaces /etc/hostname on partition 2 of img, unmounted.
func writeHostname(t *testing.T, img string, layout map[string]string, name string) {
	t.Helper()
	local := filepath.Join(t.TempDir(), "hostname")
	if err := os.WriteFile(local, []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	debugfs(t, img, layout["ROOT_OFFSET"], true, "rm /etc/hostname", "cd /etc", "write "+local+" hostname")
	if got := debugfs(t, img, layout["ROOT_OFFSET"], false, "cat /etc/hostname"); !strings.Contains(got, name) {
		t.Fatalf("/etc/hostname after debugfs: %q", got)
	}
}

// logTimes logs where a boot spent its time: guest uptime stamps of
// firstboot's steps and the wall time from QEMU's start (the firmware and
// boot loader run before the guest's clock starts).
func logTimes(t *testing.T, r bootResult) {
	t.Helper()
	t.Logf("guest time: firstboot started %s, modules loaded %s, /etc/hostname read %s, DHCP lease %s, metadata answered %s; wall time QEMU start to power off %s",
		stamp(r.console, "starting:"), stamp(r.console, "kernel modules loaded"),
		stamp(r.console, "/etc/hostname on"), stamp(r.console, "DHCP lease"), stamp(r.console, "GET http"),
		r.wall.Round(100*time.Millisecond))
	var lines []string
	for line := range strings.Lines(r.console) {
		if strings.Contains(line, "firstboot: ") || strings.Contains(line, "herd-installed-os: ") {
			lines = append(lines, strings.TrimRight(line, "\r\n"))
		}
	}
	t.Logf("console:\n%s", strings.Join(lines, "\n"))
}

// fatFile reads a file of the FAT boot partition with mtools (unmounted).
func fatFile(t *testing.T, disk string, layout map[string]string, path string) []byte {
	t.Helper()
	cmd := exec.Command("mtype", "-i", disk+"@@"+layout["BOOT_OFFSET"], "::"+path)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mtype %s: %v\n%s", path, err, stderr.String())
	}
	return stdout.Bytes()
}

// checkEFI checks the UEFI half of the boot partition: the removable-media
// loader path holds syslinux.efi, ldlinux.e64 sits beside it, and the one
// syslinux.cfg at the root (which syslinux.efi falls back to) boots the
// kernel of the root folder.
func checkEFI(t *testing.T, disk string, layout map[string]string) {
	t.Helper()
	if layout["EFI_LOADER"] != "/EFI/BOOT/BOOTX64.EFI" {
		t.Errorf("layout.env EFI_LOADER=%q", layout["EFI_LOADER"])
	}
	for path, src := range map[string]string{
		"/EFI/BOOT/BOOTX64.EFI": "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi",
		"/EFI/BOOT/ldlinux.e64": "/usr/lib/syslinux/modules/efi64/ldlinux.e64",
	} {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fatFile(t, disk, layout, path), want) {
			t.Errorf("%s on the boot partition is not %s", path, src)
		}
	}
	cfg := string(fatFile(t, disk, layout, "/syslinux.cfg"))
	for _, want := range []string{"LINUX /vmlinuz", "INITRD /initrd.img", "APPEND " + layout["CMDLINE"]} {
		if !strings.Contains(cfg, want) {
			t.Errorf("syslinux.cfg lacks %q:\n%s", want, cfg)
		}
	}
}
