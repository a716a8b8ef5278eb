package osie

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/worker/internal/registrytest"
	"github.com/herd-metal/herd/worker/internal/runc/runctest"
)

// ciRequire fails under CI=true and skips elsewhere when a real part is missing.
func ciRequire(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %v (make deps installs it)", what, err)
	}
	t.Skipf("%s: %v (make deps installs it)", what, err)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// inputsKey hashes what build.sh's output depends on: this folder, the
// worker's sources, the Debian packages it copies from and the toolchain.
func inputsKey(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	for _, dir := range []string{"worker/osie", "worker/cmd", "worker/internal"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil {
				fmt.Fprintf(h, "%s %x\n", p, sha256.Sum256(b))
			}
			return nil
		})
	}
	for _, f := range []string{"worker/go.mod", "worker/go.sum"} {
		b, _ := os.ReadFile(filepath.Join(root, f))
		fmt.Fprintf(h, "%s %x\n", f, sha256.Sum256(b))
	}
	out, _ := exec.Command("dpkg-query", "-W", "docker.io", "containerd", "runc", "tini").Output()
	h.Write(out)
	out, _ = exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	h.Write(out)
	out, _ = exec.Command("go", "version").Output()
	h.Write(out)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// buildOSIE runs build.sh into a cache folder keyed by its inputs.
func buildOSIE(t *testing.T) (kernel, initrd string) {
	t.Helper()
	root := repoRoot(t)
	for _, tool := range []string{"dpkg-deb", "depmod", "cpio", "zstd", "runc"} {
		_, err := exec.LookPath(tool)
		ciRequire(t, tool, err)
	}
	out := filepath.Join(root, ".tmp", "osie-test", inputsKey(t, root))
	kernel, initrd = filepath.Join(out, "vmlinuz"), filepath.Join(out, "initramfs.img")
	if _, err := os.Stat(initrd); err == nil {
		t.Logf("reusing the OSIE built in %s", out)
		return kernel, initrd
	}
	start := time.Now()
	cmd := exec.Command("sh", filepath.Join(root, "worker/osie/build.sh"))
	cmd.Env = append(os.Environ(), "OUT="+out+".partial", "ENGINE=runc") // what the test checks
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		ciRequireBuild(t, err, log.String())
	}
	if err := os.Rename(out+".partial", out); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the OSIE in %s:\n%s", time.Since(start).Round(time.Second), log.String())
	return kernel, initrd
}

func ciRequireBuild(t *testing.T, err error, log string) {
	t.Helper()
	if strings.Contains(log, "no kernel package") {
		ciRequire(t, "the Debian kernel package", fmt.Errorf("%v\n%s", err, log))
	}
	t.Fatalf("build.sh: %v\n%s", err, log)
}

// withStub appends a newc archive holding the stub worker to the initramfs
// (the kernel unpacks concatenated archives; each starts 4-byte aligned).
func withStub(t *testing.T, initrd string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(tree, "usr/bin/stubworker"), "./internal/stubworker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the stub worker: %v\n%s", err, out)
	}
	var list bytes.Buffer
	for _, p := range []string{"usr", "usr/bin", "usr/bin/stubworker"} {
		list.WriteString(p + "\n")
	}
	cpio := exec.Command("cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0")
	cpio.Dir, cpio.Stdin = tree, &list
	stub, err := cpio.Output()
	if err != nil {
		t.Fatalf("cpio: %v", err)
	}
	base, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if pad := len(base) % 512; pad != 0 {
		base = append(base, make([]byte, 512-pad)...)
	}
	out := filepath.Join(dir, "initrd.img")
	if err := os.WriteFile(out, append(base, stub...), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBootInQEMU boots the OSIE in QEMU (TCG, user networking, whose DHCP
// server stays inside QEMU) with a stub worker that runs one action with
// runc from a registry on the host's loopback, then asks for a power off
// although herd.after=reboot, and reads the serial console.
func TestBootInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM: minutes under TCG")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	ciRequire(t, "qemu-system-x86_64", err)
	kernel, initrd := buildOSIE(t)
	initrd = withStub(t, initrd)
	// The registry the stub pulls its action image from: on the host's
	// loopback, which QEMU's user network shows the guest as 10.0.2.2.
	reg := registrytest.Start(t, registrytest.Options{})
	runctest.Push(t, reg.Addr, "herd-test/probe:v1", runctest.Images(t)["/probe"], "", "")
	_, regPort, _ := net.SplitHostPort(reg.Addr)
	guestRegistry := "10.0.2.2:" + regPort
	if st, err := os.Stat(initrd); err == nil {
		t.Logf("initramfs with the stub: %d MiB", st.Size()>>20)
	}

	consoleLog := filepath.Join(t.TempDir(), "console.log")
	cmdline := strings.Join([]string{
		"console=ttyS0", "quiet", "panic=-1",
		"herd.server=10.0.2.2:42113", "herd.worker_id=vm-1", "herd.token=secret-token",
		"herd.cert_url=http://10.0.2.2:42114/cert", "herd.metadata=http://10.0.2.2:50061",
		"herd.registry=" + guestRegistry, "herd.syslog=10.0.2.2",
		"BOOTIF=01-52-54-00-12-34-56", "herd.worker=/usr/bin/stubworker", "herd.after=reboot",
	}, " ")
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2",
		"-nographic", "-monitor", "none", "-serial", "file:" + consoleLog, "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
		"-nic", "user,model=virtio-net-pci,mac=52:54:00:12:34:56",
		"-device", "virtio-rng-pci", // the kernel's RNG is ready at once: getrandom does not block the DHCP client
	}
	qcmd := exec.Command(qemu, args...)
	var qout bytes.Buffer
	qcmd.Stdout, qcmd.Stderr = &qout, &qout
	start := time.Now()
	if err := qcmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- qcmd.Wait() }()
	var workerSeen time.Duration
	deadline := time.After(6 * time.Minute)
	var qerr error
wait:
	for {
		select {
		case qerr = <-done:
			break wait
		case <-deadline:
			_ = qcmd.Process.Kill() // our own QEMU, by its pid
			<-done
			t.Fatalf("QEMU still running after 6 minutes; console:\n%s", tail(consoleLog, 60))
		case <-time.After(200 * time.Millisecond):
			if workerSeen == 0 && fileHas(consoleLog, `msg="worker started"`) {
				workerSeen = time.Since(start)
			}
		}
	}
	wall := time.Since(start)
	if qerr != nil {
		t.Fatalf("QEMU: %v\n%s\nconsole:\n%s", qerr, qout.String(), tail(consoleLog, 60))
	}
	console, _ := os.ReadFile(consoleLog)
	text := string(console)
	for _, want := range []string{
		`msg="kernel command line parsed" server=10.0.2.2:42113 worker_id=vm-1 token_set=true cert_url=http://10.0.2.2:42114/cert metadata=http://10.0.2.2:50061 registry=` + guestRegistry + ` syslog=10.0.2.2 boot_mac=52:54:00:12:34:56`,
		`msg="kernel modules loaded"`,
		`msg="file system modules loaded"`,
		`msg="DHCP lease" mac=52:54:00:12:34:56 nic=eth0 addr=10.0.2.15/24 gateway=10.0.2.2`,
		`msg="logging to syslog"`,
		`msg="container runtime" runtime=runc`,
		`msg="runc ready" version=`,
		`msg="worker started" mac=52:54:00:12:34:56 worker=/usr/bin/stubworker`,
		`stubworker: HERD_SERVER=10.0.2.2:42113`,
		`stubworker: HERD_ID=vm-1`,
		`stubworker: token set: true`,
		`stubworker: HERD_RUNTIME=runc`,
		`stubworker: HERD_RUNC_NO_PIVOT=true`,
		`stubworker: HERD_REGISTRY_INSECURE=true`,
		// The action ran: pulled over plain HTTP, its layers flattened,
		// privileged with the machine's /dev, on the initramfs root.
		`stubworker: action stdout: /dev/loop-control present`,
		`stubworker: action stdout: /etc/kept present`,
		`stubworker: action stdout: /etc/removed absent`,
		`stubworker: action exit 0`,
		`msg="worker ended" mac=52:54:00:12:34:56 exit=0`,
		`msg="workflow over" mac=52:54:00:12:34:56 action=poweroff why="requested by the workflow"`,
		`reboot: Power down`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if !regexp.MustCompile(`msg="kernel modules loaded".* drivers=\S*virtio_pci,\S*virtio_net`).MatchString(text) {
		t.Error("virtio_pci then virtio_net were not loaded as drivers of the devices present")
	}
	if strings.Contains(text, "secret-token") {
		t.Error("the worker credential appears on the console")
	}
	if t.Failed() {
		t.Fatalf("console:\n%s", tail(consoleLog, 80))
	}
	t.Logf("guest time: init started %s, modules loaded %s, DHCP lease %s, runc ready %s, worker started %s, action ended %s (kernel start = 0)",
		stamp(text, `msg="herd OSIE init starting"`), stamp(text, `msg="kernel modules loaded"`), stamp(text, `msg="DHCP lease"`),
		stamp(text, `msg="runc ready"`), stamp(text, `msg="worker started"`), stamp(text, `stubworker: action exit`))
	t.Logf("wall time: QEMU start to worker started %s, to QEMU exit %s", workerSeen.Round(100*time.Millisecond), wall.Round(100*time.Millisecond))
}

var uptimeRE = regexp.MustCompile(`uptime=([0-9.]+)s`)

// stamp is the guest uptime of the first console line holding s.
func stamp(text, s string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			if m := uptimeRE.FindStringSubmatch(sc.Text()); m != nil {
				f, _ := strconv.ParseFloat(m[1], 64)
				return fmt.Sprintf("%.1fs", f)
			}
		}
	}
	return "never"
}

func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
