package ipmi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
	"github.com/herd-metal/herd/services/bmc/internal/driver/drivertest"
	"github.com/herd-metal/herd/services/bmc/internal/ipmisim"
)

func TestSimPowerAndBootDevice(t *testing.T) {
	s := ipmisim.Start(t)
	d := &Driver{Timeout: 10 * time.Second}
	ctx := context.Background()

	status := func(want driver.PowerState) {
		t.Helper()
		got, err := d.PowerStatus(ctx, s.BMC)
		if err != nil || got != want {
			t.Fatalf("PowerStatus = %q, %v; want %q", got, err, want)
		}
		if out := s.Ipmitool(t, "chassis", "power", "status"); !strings.Contains(out, "Chassis Power is "+string(want)) {
			t.Fatalf("ipmitool says %q, want power %s", out, want)
		}
	}
	bootdev := func(dev driver.BootDevice, ipmitoolSays string) {
		t.Helper()
		if err := d.SetBootDevice(ctx, s.BMC, dev, driver.BootOptions{}); err != nil {
			t.Fatalf("SetBootDevice(%s): %v", dev, err)
		}
		if out := s.Ipmitool(t, "chassis", "bootparam", "get", "5"); !strings.Contains(out, "Boot Device Selector : "+ipmitoolSays) {
			t.Fatalf("after bootdev %s ipmitool says:\n%s\nwant selector %q", dev, out, ipmitoolSays)
		}
	}

	status(driver.StateOff)
	if s.QemuPid() != 0 {
		t.Fatal("a VM runs before power on")
	}

	bootdev(driver.BootPXE, "Force PXE")
	if err := d.Power(ctx, s.BMC, driver.PowerOn); err != nil {
		t.Fatalf("power on: %v", err)
	}
	status(driver.StateOn)
	if cl := s.QemuCmdline(); !strings.Contains(cl, "order=n ") || !strings.Contains(cl, "ipmi-bmc-extern") {
		t.Fatalf("VM command line %q: want the network boot order and ipmi-bmc-extern", cl)
	}
	ipmisim.WaitFor(t, "QEMU's ipmi-bmc-extern to connect to ipmi_sim", s.VMConnected)

	// Cycle: off, then on again by the simulator's timer, with the boot
	// device set since.
	bootdev(driver.BootDisk, "Force Boot from default Hard-Drive")
	first := s.QemuPid()
	if err := d.Power(ctx, s.BMC, driver.PowerCycle); err != nil {
		t.Fatalf("power cycle: %v", err)
	}
	ipmisim.WaitFor(t, "the VM to come back with a new process after power cycle", func() bool {
		p := s.QemuPid()
		return p != 0 && p != first && strings.Contains(s.QemuCmdline(), "order=c ")
	})
	status(driver.StateOn)

	bootdev(driver.BootBIOS, "Force Boot into BIOS Setup")
	second := s.QemuPid()
	if err := d.Power(ctx, s.BMC, driver.PowerReset); err != nil {
		t.Fatalf("power reset: %v", err)
	}
	ipmisim.WaitFor(t, "the VM to restart after reset", func() bool {
		p := s.QemuPid()
		return p != 0 && p != second && strings.Contains(s.QemuCmdline(), "menu=on")
	})
	status(driver.StateOn)

	if err := d.Power(ctx, s.BMC, driver.PowerOff); err != nil {
		t.Fatalf("power off: %v", err)
	}
	status(driver.StateOff)
	if s.QemuPid() != 0 {
		t.Fatal("the VM still runs after power off")
	}
	log, _ := os.ReadFile(filepath.Join(s.Dir, "chassis.log"))
	t.Logf("chassis control calls:\n%s", log)
}

func TestSimWrongPassword(t *testing.T) {
	s := ipmisim.Start(t)
	b := s.BMC
	b.Password = "wrong-Passw0rd"
	opened := openSessionRequests(t, s)
	start := time.Now()
	err := (&Driver{Timeout: 5 * time.Second}).Power(context.Background(), b, driver.PowerOn)
	t.Logf("wrong password refused in %s", time.Since(start))
	drivertest.WantErr(t, err, driver.ErrAuth, b)
	if s.QemuPid() != 0 {
		t.Fatal("wrong credentials powered the VM on")
	}
	b.Username = "nobody"
	start = time.Now()
	_, err = (&Driver{Timeout: 5 * time.Second}).PowerStatus(context.Background(), b)
	t.Logf("unknown user refused in %s", time.Since(start))
	drivertest.WantErr(t, err, driver.ErrAuth, b)
	// One login attempt per call, not one per cipher suite.
	if n := openSessionRequests(t, s) - opened; n != 2 {
		t.Fatalf("ipmi_sim got %d Open Session Requests for 2 calls with bad credentials, want 2", n)
	}
}

// openSessionRequests counts the RMCP+ Open Session Requests in the
// simulator's debug log (each received message is dumped on its own
// line after "Receive message": " 06 00 ff 07", RMCP, then auth type 6
// and payload type 0x10).
func openSessionRequests(t *testing.T, s *ipmisim.Sim) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, "ipmi_sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), " 06 00 ff 07 06 10 ")
}
