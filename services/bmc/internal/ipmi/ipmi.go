// Package ipmi is the IPMI v2.0 (RMCP+, "lanplus") driver, on the pure-Go
// github.com/bougou/go-ipmi: no ipmitool process per call, and the UDP
// socket is ours (handed to the library through its dialer hook), so it
// is closed on every path, also when the BMC stops answering.
package ipmi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	goipmi "github.com/bougou/go-ipmi"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
)

// Driver is the IPMI driver. Timeout bounds each call (session setup,
// command, session close); zero means driver.DefaultTimeout.
type Driver struct {
	Timeout time.Duration
}

var _ driver.Driver = (*Driver)(nil)

// maxUser is IPMI's user name limit (16 bytes).
const maxUser = 16

// PowerStatus asks Get Chassis Status.
func (d *Driver) PowerStatus(ctx context.Context, b driver.BMC) (driver.PowerState, error) {
	var state driver.PowerState
	err := d.do(ctx, b, "power status", func(ctx context.Context, c *goipmi.Client) error {
		res, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		state = driver.StateOff
		if res.PowerIsOn {
			state = driver.StateOn
		}
		return nil
	})
	return state, err
}

// chassisControl maps an action to the Chassis Control command's value.
func chassisControl(a driver.PowerAction) (goipmi.ChassisControl, bool) {
	switch a {
	case driver.PowerOn:
		return goipmi.ChassisControlPowerUp, true
	case driver.PowerOff:
		return goipmi.ChassisControlPowerDown, true
	case driver.PowerCycle:
		return goipmi.ChassisControlPowerCycle, true
	case driver.PowerReset:
		return goipmi.ChassisControlHardReset, true
	}
	return 0, false
}

// Power sends Chassis Control.
func (d *Driver) Power(ctx context.Context, b driver.BMC, a driver.PowerAction) error {
	op := "power " + string(a)
	cc, ok := chassisControl(a)
	if !ok {
		return driver.Fail(b, op, driver.ErrBadInput, fmt.Sprintf("unknown power action %q", a))
	}
	return d.do(ctx, b, op, func(ctx context.Context, c *goipmi.Client) error {
		_, err := c.ChassisControl(ctx, cc)
		return err
	})
}

// bootFlags is the Set System Boot Options parameter 5 (boot flags) for
// a device: valid bit set, persistence and BIOS/EFI boot type as asked.
func bootFlags(dev driver.BootDevice, o driver.BootOptions) (*goipmi.BootOptionParam_BootFlags, bool) {
	f := &goipmi.BootOptionParam_BootFlags{
		BootFlagsValid: true,
		Persist:        o.Persistent,
		BIOSBootType:   goipmi.BIOSBootTypeLegacy,
	}
	if o.EFI {
		f.BIOSBootType = goipmi.BIOSBootTypeEFI
	}
	switch dev {
	case driver.BootPXE:
		f.BootDeviceSelector = goipmi.BootDeviceSelectorForcePXE
	case driver.BootDisk:
		f.BootDeviceSelector = goipmi.BootDeviceSelectorForceHardDrive
	case driver.BootBIOS:
		f.BootDeviceSelector = goipmi.BootDeviceSelectorForceBIOSSetup
	default:
		return nil, false
	}
	return f, true
}

// SetBootDevice writes the boot flags parameter, framed by set-in-progress
// as the IPMI spec asks (go-ipmi's SetBootParamBootFlags).
func (d *Driver) SetBootDevice(ctx context.Context, b driver.BMC, dev driver.BootDevice, o driver.BootOptions) error {
	op := "bootdev " + string(dev)
	flags, ok := bootFlags(dev, o)
	if !ok {
		return driver.Fail(b, op, driver.ErrBadInput, fmt.Sprintf("unknown boot device %q", dev))
	}
	return d.do(ctx, b, op, func(ctx context.Context, c *goipmi.Client) error {
		return c.SetBootParamBootFlags(ctx, flags)
	})
}

// do runs fn in one RMCP+ session with b, bounded by the timeout.
func (d *Driver) do(ctx context.Context, b driver.BMC, op string, fn func(context.Context, *goipmi.Client) error) error {
	if err := b.Validate(); err != nil {
		return driver.Fail(b, op, driver.ErrBadInput, err.Error())
	}
	if b.Protocol != driver.IPMI {
		return driver.Fail(b, op, driver.ErrBadInput, "not an IPMI BMC")
	}
	if len(b.Username) > maxUser {
		return driver.Fail(b, op, driver.ErrBadInput, fmt.Sprintf("user name longer than %d bytes", maxUser))
	}
	ctx, cancel := driver.WithTimeout(ctx, d.Timeout)
	defer cancel()

	dl := &dialer{}
	defer dl.close()
	c, err := goipmi.NewClient(b.Host, b.Port, b.Username, b.Password)
	if err != nil {
		return driver.Fail(b, op, driver.ErrBadInput, err.Error())
	}
	// The library's read deadline per exchange: the time left, so one
	// lost datagram cannot outlive the call.
	left := time.Until(deadline(ctx))
	c.WithInterface(goipmi.InterfaceLanplus).WithTimeout(left).WithUDPProxy(dl)

	if err := c.Connect(ctx); err != nil {
		return classify(ctx, b, op+" (session)", err)
	}
	ferr := fn(ctx, c)
	// Close the session even when the call's time is up, briefly: a BMC
	// has few session slots. Our socket is closed by dl.close either way.
	cctx, ccancel := context.WithTimeout(context.Background(), closeTimeout)
	_ = c.Close(cctx)
	ccancel()
	if ferr != nil {
		return classify(ctx, b, op, ferr)
	}
	return nil
}

// closeTimeout bounds the Close Session exchange after a call.
const closeTimeout = 2 * time.Second

func deadline(ctx context.Context) time.Time {
	t, _ := ctx.Deadline() // always set by driver.WithTimeout
	return t
}

// classify turns a go-ipmi error (plain strings, mostly) into a cause.
func classify(ctx context.Context, b driver.BMC, op string, err error) error {
	msg := err.Error()
	var re *goipmi.ResponseError
	switch {
	case ctx.Err() != nil, strings.Contains(msg, "i/o timeout"), strings.Contains(msg, "canceled from caller"):
		return driver.Fail(b, op, driver.ErrTimeout, "no answer: "+msg)
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "no route to host"),
		strings.Contains(msg, "network is unreachable"), strings.Contains(msg, "udp dial failed"),
		strings.Contains(msg, "resolve addr failed"):
		return driver.Fail(b, op, driver.ErrUnreachable, msg)
	case strings.Contains(msg, "authcode not equal"), strings.Contains(msg, "rakp status code error"),
		strings.Contains(msg, "return status of rakp2"), strings.Contains(msg, "unauthorized"),
		strings.Contains(msg, "privilege"):
		return driver.Fail(b, op, driver.ErrAuth, msg)
	case errors.As(err, &re):
		cc := re.CompletionCode()
		cause := driver.ErrRejected
		// 0xC1 invalid command, 0xCC invalid data field: what a BMC
		// answers for a feature it does not have.
		if cc == 0xc1 || cc == 0xcc {
			cause = driver.ErrUnsupported
		}
		return driver.Fail(b, op, cause, fmt.Sprintf("completion code %#02x: %s", uint8(cc), msg))
	}
	return driver.Fail(b, op, driver.ErrMalformed, msg)
}

// dialer is go-ipmi's UDP dialer hook: it keeps the socket so do can
// close it whatever the library did (its Close skips the socket when the
// Close Session exchange fails).
type dialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("udp dial failed: %w", err)
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, nil
}

func (d *dialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}
