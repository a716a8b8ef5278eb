// Package redfish is the Redfish driver, on github.com/stmcginnis/gofish:
// a session (SessionService, X-Auth-Token) per call, the machine's
// ComputerSystem, its Reset action and its Boot override properties.
package redfish

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/common"
	rf "github.com/stmcginnis/gofish/redfish"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
)

// Driver is the Redfish driver.
type Driver struct {
	// Timeout bounds each call (session, requests, logout); zero means
	// driver.DefaultTimeout.
	Timeout time.Duration
	// Scheme is "https" (default) or "http" (tests, and BMCs behind a
	// TLS-terminating proxy).
	Scheme string
	// Insecure skips TLS certificate checks: BMCs mostly carry
	// self-signed certificates.
	Insecure bool
}

var _ driver.Driver = (*Driver)(nil)

// PowerStatus reads the system's PowerState.
func (d *Driver) PowerStatus(ctx context.Context, b driver.BMC) (driver.PowerState, error) {
	var state driver.PowerState
	err := d.do(ctx, b, "power status", func(sys *rf.ComputerSystem) error {
		switch sys.PowerState {
		case rf.OnPowerState, rf.PoweringOffPowerState:
			state = driver.StateOn
		case rf.OffPowerState, rf.PoweringOnPowerState:
			state = driver.StateOff
		default:
			return errMalformed{fmt.Sprintf("PowerState %q", sys.PowerState)}
		}
		return nil
	})
	return state, err
}

// resetType maps an action to a ComputerSystem.Reset ResetType.
func resetType(a driver.PowerAction) (rf.ResetType, bool) {
	switch a {
	case driver.PowerOn:
		return rf.OnResetType, true
	case driver.PowerOff:
		return rf.ForceOffResetType, true
	case driver.PowerCycle:
		return rf.PowerCycleResetType, true
	case driver.PowerReset:
		return rf.ForceRestartResetType, true
	}
	return "", false
}

// Power posts the Reset action.
func (d *Driver) Power(ctx context.Context, b driver.BMC, a driver.PowerAction) error {
	op := "power " + string(a)
	rt, ok := resetType(a)
	if !ok {
		return driver.Fail(b, op, driver.ErrBadInput, fmt.Sprintf("unknown power action %q", a))
	}
	return d.do(ctx, b, op, func(sys *rf.ComputerSystem) error {
		return sys.Reset(rt)
	})
}

// boot is the Boot object to PATCH for a device.
func boot(dev driver.BootDevice, o driver.BootOptions) (rf.Boot, bool) {
	bt := rf.Boot{
		BootSourceOverrideEnabled: rf.OnceBootSourceOverrideEnabled,
		BootSourceOverrideMode:    rf.LegacyBootSourceOverrideMode,
	}
	if o.Persistent {
		bt.BootSourceOverrideEnabled = rf.ContinuousBootSourceOverrideEnabled
	}
	if o.EFI {
		bt.BootSourceOverrideMode = rf.UEFIBootSourceOverrideMode
	}
	switch dev {
	case driver.BootPXE:
		bt.BootSourceOverrideTarget = rf.PxeBootSourceOverrideTarget
	case driver.BootDisk:
		bt.BootSourceOverrideTarget = rf.HddBootSourceOverrideTarget
	case driver.BootBIOS:
		bt.BootSourceOverrideTarget = rf.BiosSetupBootSourceOverrideTarget
	default:
		return bt, false
	}
	return bt, true
}

// SetBootDevice patches the system's Boot override.
func (d *Driver) SetBootDevice(ctx context.Context, b driver.BMC, dev driver.BootDevice, o driver.BootOptions) error {
	op := "bootdev " + string(dev)
	bt, ok := boot(dev, o)
	if !ok {
		return driver.Fail(b, op, driver.ErrBadInput, fmt.Sprintf("unknown boot device %q", dev))
	}
	return d.do(ctx, b, op, func(sys *rf.ComputerSystem) error {
		return sys.SetBoot(bt)
	})
}

type errMalformed struct{ s string }

func (e errMalformed) Error() string { return e.s }

type errUnsupported struct{ s string }

func (e errUnsupported) Error() string { return e.s }

// do opens a session, finds the one ComputerSystem, runs fn, logs out.
func (d *Driver) do(ctx context.Context, b driver.BMC, op string, fn func(*rf.ComputerSystem) error) error {
	if err := b.Validate(); err != nil {
		return driver.Fail(b, op, driver.ErrBadInput, err.Error())
	}
	if b.Protocol != driver.Redfish {
		return driver.Fail(b, op, driver.ErrBadInput, "not a Redfish BMC")
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = driver.DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	scheme := d.Scheme
	if scheme == "" {
		scheme = "https"
	}
	hc := &http.Client{
		// Also bounds a BMC that sends its headers and then stalls.
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			TLSClientConfig:       &tls.Config{InsecureSkipVerify: d.Insecure}, //nolint:gosec // BMC certificates are mostly self-signed; opt-in
			DisableKeepAlives:     true,
		},
	}
	defer hc.CloseIdleConnections()
	c, err := gofish.ConnectContext(ctx, gofish.ClientConfig{
		Endpoint:   scheme + "://" + b.Addr(),
		Username:   b.Username,
		Password:   b.Password,
		HTTPClient: hc,
	})
	if err != nil {
		return classify(ctx, b, op+" (session)", err)
	}
	defer c.Logout()
	systems, err := c.Service.Systems()
	if err != nil {
		return classify(ctx, b, op, err)
	}
	if len(systems) != 1 {
		// A BMC managing several systems needs a system id in the
		// record; herd's records name one machine per BMC for now.
		return driver.Fail(b, op, driver.ErrUnsupported, fmt.Sprintf("%d ComputerSystems, want exactly 1", len(systems)))
	}
	if err := fn(systems[0]); err != nil {
		return classify(ctx, b, op, err)
	}
	return nil
}

// classify turns a gofish or net/http error into a cause.
func classify(ctx context.Context, b driver.BMC, op string, err error) error {
	var (
		re  *common.Error
		ue  *url.Error
		ne  net.Error
		mal errMalformed
		uns errUnsupported
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mal):
		return driver.Fail(b, op, driver.ErrMalformed, mal.s)
	case errors.As(err, &uns):
		return driver.Fail(b, op, driver.ErrUnsupported, uns.s)
	case errors.As(err, &re) && re.HTTPReturnedStatusCode != 0:
		return driver.Fail(b, op, statusCause(re.HTTPReturnedStatusCode), redfishMessage(re))
	case ctx.Err() != nil, errors.As(err, &ne) && ne.Timeout():
		return driver.Fail(b, op, driver.ErrTimeout, "no complete answer: "+err.Error())
	case errors.As(err, &se), errors.As(err, &te):
		return driver.Fail(b, op, driver.ErrMalformed, "not a Redfish JSON document: "+err.Error())
	case errors.As(err, &ue):
		msg := ue.Err.Error()
		if strings.Contains(msg, "connection refused") || strings.Contains(msg, "no route") ||
			strings.Contains(msg, "unreachable") || strings.Contains(msg, "no such host") {
			return driver.Fail(b, op, driver.ErrUnreachable, msg)
		}
		// EOF, reset or a broken HTTP answer mid-reply.
		return driver.Fail(b, op, driver.ErrMalformed, msg)
	}
	return driver.Fail(b, op, driver.ErrMalformed, err.Error())
}

// statusCause maps an HTTP status of a Redfish reply to a cause.
func statusCause(code int) error {
	switch {
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		return driver.ErrAuth
	case code == http.StatusNotFound, code == http.StatusMethodNotAllowed, code == http.StatusNotImplemented:
		return driver.ErrUnsupported
	case code == http.StatusRequestTimeout, code == http.StatusGatewayTimeout:
		return driver.ErrTimeout
	case code >= 500:
		return driver.ErrRejected
	}
	return driver.ErrRejected
}

// redfishMessage is the status and the error's message ids and messages
// (@Message.ExtendedInfo), not the raw body.
func redfishMessage(e *common.Error) string {
	s := fmt.Sprintf("HTTP %d", e.HTTPReturnedStatusCode)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	for _, x := range e.ExtendedInfos {
		s += "; " + x.MessageID
		if x.Message != "" {
			s += ": " + x.Message
		}
	}
	return s
}
