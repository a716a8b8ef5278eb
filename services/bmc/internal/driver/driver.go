// Package driver is what herd-bmc asks of one BMC: power on, off, cycle,
// reset and status, and the next boot device. The protocol packages
// (ipmi, redfish) implement Driver; the job runner only sees Driver.
//
// Every error a driver returns is an *Error naming the BMC (protocol,
// address:port) and the operation, wrapping one of the Err* causes below
// so callers decide on retries with errors.Is, never on message text.
package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Protocol is how a BMC is spoken to.
type Protocol string

const (
	IPMI    Protocol = "ipmi"
	Redfish Protocol = "redfish"
)

// BMC is one machine's management controller. Password is a secret: it
// is never part of String, of an Error or of a log line.
type BMC struct {
	Protocol Protocol
	Host     string
	Port     int
	Username string
	Password string
}

// Addr is host:port (IPv6 literals bracketed).
func (b BMC) Addr() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// String names the BMC in errors and logs: "ipmi 10.0.0.5:623".
func (b BMC) String() string { return string(b.Protocol) + " " + b.Addr() }

// Validate checks what a driver needs before it sends anything.
func (b BMC) Validate() error {
	switch {
	case b.Protocol != IPMI && b.Protocol != Redfish:
		return fmt.Errorf("protocol %q is not ipmi or redfish", b.Protocol)
	case b.Host == "":
		return errors.New("no address")
	case b.Port < 1 || b.Port > 65535:
		return fmt.Errorf("port %d is not 1-65535", b.Port)
	}
	return nil
}

// PowerAction is a change of power asked of a BMC.
type PowerAction string

const (
	PowerOn    PowerAction = "on"
	PowerOff   PowerAction = "off"   // hard off, no OS shutdown
	PowerCycle PowerAction = "cycle" // off, then on
	PowerReset PowerAction = "reset" // hard reset, power stays on
)

// ParsePowerAction accepts on, off, cycle, reset.
func ParsePowerAction(s string) (PowerAction, error) {
	switch a := PowerAction(s); a {
	case PowerOn, PowerOff, PowerCycle, PowerReset:
		return a, nil
	}
	return "", fmt.Errorf("power action %q is not on, off, cycle or reset", s)
}

// PowerState is what a BMC reports.
type PowerState string

const (
	StateOn  PowerState = "on"
	StateOff PowerState = "off"
)

// BootDevice is the device the machine boots from next.
type BootDevice string

const (
	BootPXE  BootDevice = "pxe"
	BootDisk BootDevice = "disk"
	BootBIOS BootDevice = "bios" // the firmware's setup
)

// ParseBootDevice accepts pxe, disk, bios.
func ParseBootDevice(s string) (BootDevice, error) {
	switch d := BootDevice(s); d {
	case BootPXE, BootDisk, BootBIOS:
		return d, nil
	}
	return "", fmt.Errorf("boot device %q is not pxe, disk or bios", s)
}

// BootOptions qualify a boot device: Persistent keeps it for every boot
// (else only the next one), EFI asks for a UEFI boot (else legacy BIOS).
type BootOptions struct {
	Persistent bool
	EFI        bool
}

// Driver speaks one protocol. Each call opens its own session, does its
// work and closes the session, within the driver's timeout and ctx.
type Driver interface {
	PowerStatus(ctx context.Context, b BMC) (PowerState, error)
	Power(ctx context.Context, b BMC, a PowerAction) error
	SetBootDevice(ctx context.Context, b BMC, d BootDevice, o BootOptions) error
}

// DefaultTimeout bounds one driver call (session setup, command, close)
// when a driver is given none.
const DefaultTimeout = 20 * time.Second

// The causes an Error wraps.
var (
	ErrBadInput    = errors.New("bad input")                // the request or BMC record is wrong; no traffic sent
	ErrUnreachable = errors.New("unreachable")              // no route, refused, reset
	ErrAuth        = errors.New("authentication failed")    // wrong user or password, or too little privilege
	ErrTimeout     = errors.New("timed out")                // no (complete) answer within the timeout
	ErrMalformed   = errors.New("malformed reply")          // the answer could not be understood
	ErrRejected    = errors.New("rejected by the BMC")      // a well-formed refusal (IPMI completion code, Redfish error)
	ErrUnsupported = errors.New("not supported by the BMC") // the BMC lacks the feature asked for
)

// Error is a failed driver call.
type Error struct {
	BMC    string // BMC.String(): protocol and address:port
	Op     string // "power on", "power status", "bootdev pxe"
	Cause  error  // one of the Err* values
	Detail string // what the library or the BMC said (bounded, no secrets)
}

func (e *Error) Error() string {
	s := "bmc " + e.BMC + ": " + e.Op + ": " + e.Cause.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap lets errors.Is match the cause.
func (e *Error) Unwrap() error { return e.Cause }

// MaxDetail bounds the BMC's words carried in an Error: a hostile BMC
// must not fill job records with megabytes.
const MaxDetail = 512

// Fail builds an Error; detail is cut to MaxDetail bytes.
func Fail(b BMC, op string, cause error, detail string) *Error {
	if len(detail) > MaxDetail {
		detail = detail[:MaxDetail] + "…"
	}
	return &Error{BMC: b.String(), Op: op, Cause: cause, Detail: detail}
}

// Retryable says whether a failed call may succeed when tried again:
// timeouts, unreachable BMCs and malformed (perhaps cut) replies may;
// bad input, wrong credentials (retrying them can lock the account),
// refusals and missing features will not.
func Retryable(err error) bool {
	switch {
	case errors.Is(err, ErrBadInput), errors.Is(err, ErrAuth),
		errors.Is(err, ErrRejected), errors.Is(err, ErrUnsupported):
		return false
	}
	return true
}

// WithTimeout bounds ctx by d (DefaultTimeout when d <= 0).
func WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(ctx, d)
}
