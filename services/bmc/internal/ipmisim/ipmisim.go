// Package ipmisim runs OpenIPMI's ipmi_sim as a real BMC for tests, with
// a QEMU VM behind it, and cross-checks it with ipmitool.
package ipmisim

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
	"github.com/herd-metal/herd/services/bmc/internal/realtest"
)

// Sim is an OpenIPMI ipmi_sim BMC on 127.0.0.1 with its own config,
// state and a QEMU VM behind it: QEMU's ipmi-bmc-extern device talks to
// the simulator's VM serial channel over a TCP chardev, and the
// simulator's chassis_control program (written here) switches the VM:
// power on starts QEMU with the boot order of the last boot device set,
// power off ends it, reset restarts it.
//
// Why chassis_control rather than startcmd: ipmi_sim answers Set System
// Boot Options (boot flags) with completion code 0xCC unless a
// chassis_control program keeps the boot device, and once there is one
// it also owns power (lanserv/bmc_chassis.c). The simulator keeps only
// the device selector: it drops the persistent and EFI bits, so those are
// checked on the bytes we send (TestBootFlagBytes), not on the BMC.
type Sim struct {
	Dir      string
	BMC      driver.BMC
	vmPort   int
	simProc  *os.Process
	ipmitool string
}

// User and Password are the simulator's admin account.
const User, Password = "herd", "sim-Passw0rd"

func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// chassisScript is ipmi_sim's chassis_control program: "get power",
// "get boot", "set power 0|1", "set reset 1", "set boot pxe|default|bios".
// It only ever signals the QEMU whose pid it wrote itself.
const chassisScript = `#!/bin/sh
dir=%[1]s
# A daemonized QEMU's parent is pid 1, which may reap it late: a zombie
# is not alive.
alive() {
	[ -s "$dir/qemu.pid" ] || return 1
	st=$(sed 's/.*) //' "/proc/$(cat "$dir/qemu.pid")/stat" 2>/dev/null) || return 1
	[ "${st%%%% *}" != Z ]
}
start() {
	case "$(cat "$dir/boot" 2>/dev/null)" in
	pxe) order=order=n ;;
	bios) order=order=c,menu=on ;;
	*) order=order=c ;;
	esac
	rm -f "$dir/qemu.pid"
	%[2]s -machine pc,accel=tcg -m 32 -nodefaults -display none -no-user-config \
		-boot "$order" -daemonize -pidfile "$dir/qemu.pid" \
		-chardev socket,id=ipmi0,host=127.0.0.1,port=%[3]d,reconnect=1 \
		-device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0 \
		>>"$dir/qemu.log" 2>&1
}
stop() {
	alive || return 0
	kill "$(cat "$dir/qemu.pid")"
	i=0; while alive && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
	rm -f "$dir/qemu.pid"
}
op=$1; shift
case $op in
get)
	for p in "$@"; do
		case $p in
		power) if alive; then echo power:1; else echo power:0; fi ;;
		boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		p=$1; v=$2; shift 2
		echo "$p $v" >>"$dir/chassis.log"
		case $p in
		boot) echo "$v" >"$dir/boot" ;;
		power) if [ "$v" = 1 ]; then alive || start; else stop; fi ;;
		reset) stop; start ;;
		esac
	done ;;
esac
`

const lanConf = `name "herdtest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %[1]d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 %[2]d codec VM
  chassis_control "%[3]s"
  user 2 true "%[4]s" "%[5]s" admin 10 md5
`

const simEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
`

func Start(t *testing.T) *Sim {
	t.Helper()
	ipmiSim := realtest.Command(t, "ipmi_sim")
	qemu := realtest.Command(t, "qemu-system-x86_64")
	s := &Sim{Dir: t.TempDir(), ipmitool: realtest.Command(t, "ipmitool")}
	lanPort, vmPort := freePort(t, "udp"), freePort(t, "tcp")
	s.vmPort = vmPort
	s.BMC = driver.BMC{Protocol: driver.IPMI, Host: "127.0.0.1", Port: lanPort, Username: User, Password: Password}
	ctl := filepath.Join(s.Dir, "chassis.sh")
	write := func(name, body string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("chassis.sh", fmt.Sprintf(chassisScript, s.Dir, qemu, vmPort), 0o755)
	write("lan.conf", fmt.Sprintf(lanConf, lanPort, vmPort, ctl, User, Password), 0o600)
	write("sim.emu", simEmu, 0o600)
	if err := os.Mkdir(filepath.Join(s.Dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(s.Dir, "ipmi_sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	// Not -n: with -n ipmi_sim writes nothing (its errors go to syslog
	// once it runs), and -d sends its debug lines (every message received
	// and why one is dropped) to stdout only when its console is on. The
	// console reads stdin: a pipe we hold open and close at the end.
	cmd := exec.Command(ipmiSim, "-d", "-c", filepath.Join(s.Dir, "lan.conf"), "-f", filepath.Join(s.Dir, "sim.emu"),
		"-s", filepath.Join(s.Dir, "state"))
	cmd.Stdout, cmd.Stderr = log, log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting ipmi_sim: %v", err)
	}
	s.simProc = cmd.Process
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// Stop the VM first (its pid is in our pid file), then the
		// simulator's process group (it and the chassis_control programs
		// it runs; the group is its own, made by Setpgid).
		if pid := s.QemuPid(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 100 && s.QemuPid() == pid; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			if s.QemuPid() == pid {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = syscall.Kill(-s.simProc.Pid, syscall.SIGKILL)
		_ = stdin.Close()
		<-exited
		if t.Failed() {
			for _, f := range []string{"ipmi_sim.log", "chassis.log", "qemu.log"} {
				t.Logf("%s:\n%s", f, tail(filepath.Join(s.Dir, f), 6000))
			}
		}
	})
	// Ready when it listens on its UDP port and answers Get Chassis
	// Status; it starts in milliseconds, so a few seconds is plenty.
	deadline := time.Now().Add(5 * time.Second)
	for !udpListening(lanPort) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ipmi_sim exited before listening on 127.0.0.1:%d: %v\n%s", lanPort, err, tail(log.Name(), 6000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipmi_sim does not listen on udp 127.0.0.1:%d after 5s", lanPort)
		}
	}
	probe := exec.Command(s.ipmitool, append(s.ipmitoolArgs(), "chassis", "power", "status")...)
	probe.Env = append(os.Environ(), "IPMI_PASSWORD="+s.BMC.Password)
	if out, err := probe.CombinedOutput(); err != nil {
		t.Fatalf("ipmi_sim listens on udp 127.0.0.1:%d but does not answer ipmitool: %v\n%s", lanPort, err, out)
	}
	return s
}

// tail is the end of a file, for failure logs.
func tail(name string, n int) string {
	b, err := os.ReadFile(name)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = append([]byte("…"), b[len(b)-n:]...)
	}
	return string(b)
}

// udpListening says whether a socket is bound to 127.0.0.1:port.
func udpListening(port int) bool {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == want {
			return true
		}
	}
	return false
}

func (s *Sim) QemuPid() int {
	b, err := os.ReadFile(filepath.Join(s.Dir, "qemu.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		return 0
	}
	// Not a zombie (QEMU daemonizes; pid 1 reaps it when it likes).
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	if i := strings.LastIndexByte(string(st), ')'); i < 0 || strings.HasPrefix(string(st[i+1:]), " Z") {
		return 0
	}
	return pid
}

// QemuCmdline is the running VM's command line, "" when none runs.
func (s *Sim) QemuCmdline() string {
	pid := s.QemuPid()
	if pid == 0 {
		return ""
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// Ipmitool cross-checks with the real client (password by -E, from
// the environment, not the command line).
func (s *Sim) Ipmitool(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(s.ipmitool, append(s.ipmitoolArgs(), args...)...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+s.BMC.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ipmitool %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// ipmitoolArgs reach the simulator. -C 3: without a cipher suite
// ipmitool first asks Get Channel Cipher Suites in RMCP+ framing, which
// ipmi_sim drops, and waits.
func (s *Sim) ipmitoolArgs() []string {
	return []string{"-I", "lanplus", "-C", "3", "-H", s.BMC.Host, "-p", strconv.Itoa(s.BMC.Port), "-U", s.BMC.Username, "-E"}
}

// VMConnected says whether a TCP connection to the simulator's VM port
// is established, i.e. QEMU's ipmi-bmc-extern reached ipmi_sim.
func (s *Sim) VMConnected() bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf(":%04X", s.vmPort)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[2], want) && f[3] == "01" {
			return true
		}
	}
	return false
}

func WaitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if ok() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
