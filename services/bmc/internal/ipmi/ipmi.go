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
	"regexp"
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
// when the BMC has it (IPMI v2.0 section 28.12).
func (d *Driver) SetBootDevice(ctx context.Context, b driver.BMC, dev driver.BootDevice, o driver.BootOptions) error {
	op := "bootdev " + string(dev)
	flags, ok := bootFlags(dev, o)
	if !ok {
		return driver.Fail(b, op, driver.ErrBadInput, fmt.Sprintf("unknown boot device %q", dev))
	}
	return d.do(ctx, b, op, func(ctx context.Context, c *goipmi.Client) error {
		// Set-in-progress (parameter 0) is optional in the spec, and
		// some BMCs refuse it (OpenIPMI's lanserv answers 0xCC): as
		// ipmitool does, a refusal only means we go on without it.
		// Anything else (no answer) ends the call.
		framed := true
		if err := c.SetBootParamSetInProgress(ctx, goipmi.SetInProgress_SetInProgress); err != nil {
			var re *goipmi.ResponseError
			if !errors.As(err, &re) {
				return err
			}
			framed = false
		}
		err := c.SetSystemBootOptionsParamFor(ctx, flags)
		if framed {
			if cerr := c.SetBootParamSetInProgress(ctx, goipmi.SetInProgress_SetComplete); err == nil {
				err = cerr
			}
		}
		return err
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
		return classify(ctx, b, op+" (session)", dl.bad(), err)
	}
	ferr := fn(ctx, c)
	// Close the session even when the call's time is up, briefly: a BMC
	// has few session slots. Our socket is closed by dl.close either way.
	cctx, ccancel := context.WithTimeout(context.Background(), closeTimeout)
	_ = c.Close(cctx)
	ccancel()
	if ferr != nil {
		return classify(ctx, b, op, dl.bad(), ferr)
	}
	return nil
}

// closeTimeout bounds the Close Session exchange after a call.
const closeTimeout = 2 * time.Second

func deadline(ctx context.Context) time.Time {
	t, _ := ctx.Deadline() // always set by driver.WithTimeout
	return t
}

// hexRun matches the key-dependent values go-ipmi puts in its RAKP
// errors ("authcode not equal, console: 72f4…, bmc: 31ec…"): HMACs keyed
// by the password, enough to guess it offline, so never part of an Error.
var hexRun = regexp.MustCompile(`[0-9a-fA-F]{16,}`)

// classify turns a go-ipmi error (plain strings, mostly) into a cause.
// bad is why the socket refused a datagram as no reply at all ("" when
// it did not): that is the cause, whatever the library made of it.
func classify(ctx context.Context, b driver.BMC, op, bad string, err error) error {
	msg := err.Error()
	var re *goipmi.ResponseError
	switch {
	case bad != "":
		return driver.Fail(b, op, driver.ErrMalformed, bad)
	// Before timeouts: go-ipmi joins the errors of every cipher suite it
	// tried, and once the BMC has refused the user or the password for
	// one, a later suite that went unanswered does not change the cause.
	case strings.Contains(msg, "authcode not equal"), strings.Contains(msg, "rakp status code error"),
		strings.Contains(msg, "return status of rakp2"), strings.Contains(msg, "Unauthorized"),
		strings.Contains(msg, "unauthorized"), strings.Contains(msg, "insufficient privilege"),
		strings.Contains(msg, "privilege limit"), strings.Contains(msg, "Privilege Limit"):
		return driver.Fail(b, op, driver.ErrAuth, hexRun.ReplaceAllString(msg, "…"))
	case ctx.Err() != nil, strings.Contains(msg, "i/o timeout"), strings.Contains(msg, "canceled from caller"):
		return driver.Fail(b, op, driver.ErrTimeout, "no answer: "+msg)
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "no route to host"),
		strings.Contains(msg, "network is unreachable"), strings.Contains(msg, "udp dial failed"),
		strings.Contains(msg, "resolve addr failed"):
		return driver.Fail(b, op, driver.ErrUnreachable, msg)
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
// Close Session exchange fails), and wraps it in a conn that frames the
// session-less requests and checks every datagram received.
type dialer struct {
	mu     sync.Mutex
	conns  []net.Conn
	reason string // the first datagram refused as no reply, why
	rakp2  bool   // a RAKP Message 2 came: the BMC took a cipher suite
}

func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("udp dial failed: %w", err)
	}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return &conn{Conn: c, d: d}, nil
}

func (d *dialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}

func (d *dialer) refuse(why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reason == "" {
		d.reason = why
	}
}

func (d *dialer) bad() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reason
}

// conn is the UDP socket as go-ipmi sees it.
type conn struct {
	net.Conn
	d *dialer
}

// Write sends one datagram; a session-less RMCP+ request with an IPMI
// payload goes out in IPMI v1.5 framing instead (see preSession15).
//
// It also stops go-ipmi's cipher suite loop from guessing again: the
// library tries each suite in turn when a session fails, but once a
// RAKP Message 2 came the BMC had accepted the suite, so the failure was
// the user or the password, and every further Open Session Request is a
// second failed login (BMCs lock accounts after a few, and each one holds
// a session slot until it times out: ipmi_sim stops answering after 11).
func (c *conn) Write(p []byte) (int, error) {
	if payloadType(p) == payloadOpenSessionRequest && c.d.sawRAKP2() {
		return 0, errors.New("not trying another cipher suite: the BMC refused the user or password with the last one")
	}
	out := p
	if q := preSession15(p); q != nil {
		out = q
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read receives one datagram and refuses one that is not a reply.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		return n, err
	}
	if why := notAReply(p[:n]); why != "" {
		c.d.refuse(why)
		return 0, errors.New(why)
	}
	if payloadType(p[:n]) == payloadRAKP2 {
		c.d.mu.Lock()
		c.d.rakp2 = true
		c.d.mu.Unlock()
	}
	return n, nil
}

func (d *dialer) sawRAKP2() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rakp2
}

// payloadType is an unencrypted RMCP+ datagram's payload type, -1 for
// any other datagram.
func payloadType(p []byte) int {
	if len(p) < 6 || p[0] != rmcpVersion || p[3] != rmcpClassIPMI || p[4] != authRMCPPlus || p[5]&0x80 != 0 {
		return -1
	}
	return int(p[5] & 0x3f)
}

// RMCP (DMTF ASF 2.0 section 3.2.2) and IPMI session framing (IPMI v2.0
// section 13.6 and 13.8, tables 13-8 and 13-16), as far as we look.
const (
	rmcpVersion   = 0x06
	rmcpClassIPMI = 0x07
	authNone      = 0x00
	authRMCPPlus  = 0x06
	payloadIPMI   = 0x00

	payloadOpenSessionRequest = 0x10
	payloadRAKP2              = 0x13
)

// preSession15 rewrites an RMCP+ (auth type 6) datagram carrying an
// unauthenticated IPMI message outside a session (session id and
// sequence 0: Get Channel Authentication Capabilities, Get Channel Cipher
// Suites) into IPMI v1.5 framing with auth type none; nil for any other
// datagram. The spec allows both framings for these commands, but some
// BMCs take only v1.5 before a session: OpenIPMI's lanserv drops the
// RMCP+ ones ("No session message failed: Invalid authtype: 6"), and
// ipmitool's lanplus sends v1.5 for them for that reason. go-ipmi parses
// the v1.5 reply the same way.
func preSession15(p []byte) []byte {
	const hdr = 4 + 1 + 1 + 4 + 4 + 2 // RMCP, auth type, payload type, session id, seq, length
	if len(p) < hdr || p[0] != rmcpVersion || p[3] != rmcpClassIPMI || p[4] != authRMCPPlus || p[5] != payloadIPMI {
		return nil
	}
	for _, x := range p[6:14] {
		if x != 0 {
			return nil
		}
	}
	l := int(p[14]) | int(p[15])<<8
	if l > 0xff || len(p) != hdr+l {
		return nil
	}
	q := make([]byte, 0, 4+1+4+4+1+l)
	q = append(q, p[:4]...)
	q = append(q, authNone, 0, 0, 0, 0, 0, 0, 0, 0, byte(l))
	return append(q, p[hdr:]...)
}

// notAReply says why a datagram from the BMC cannot be a reply to us, or
// "" when it may be one: an IPMI message whose network function is even
// is a request (responses are odd, IPMI v2.0 section 5.1), and an RMCP+
// session setup payload of even type is a request too (Open Session
// Request 0x10, RAKP 1 0x12, RAKP 3 0x14). A BMC, or anything on port
// 623, that echoes our datagram back lands here. What cannot be looked
// into (encrypted payloads, other classes) is left to the library.
func notAReply(p []byte) string {
	if len(p) < 5 || p[0] != rmcpVersion || p[3] != rmcpClassIPMI {
		return ""
	}
	var msg []byte
	switch p[4] {
	case authRMCPPlus:
		if len(p) < 16 {
			return ""
		}
		pt := p[5]
		if pt&0x80 != 0 { // encrypted
			return ""
		}
		switch pt &= 0x3f; {
		case pt >= 0x10 && pt <= 0x15 && pt%2 == 0:
			return fmt.Sprintf("the reply is a request (RMCP+ payload type %#02x), not a response (our own datagram echoed back?)", pt)
		case pt == payloadIPMI:
			msg = p[16:]
		default:
			return ""
		}
	default: // IPMI v1.5: auth type, seq, session id, [auth code], length
		off := 4 + 1 + 4 + 4
		if p[4] != authNone {
			off += 16
		}
		if len(p) < off+1 {
			return ""
		}
		msg = p[off+1:]
	}
	// rsAddr, netFn/rsLUN, ...
	if len(msg) < 2 {
		return ""
	}
	if netFn := msg[1] >> 2; netFn%2 == 0 {
		return fmt.Sprintf("the reply is a request (network function %#02x), not a response (our own datagram echoed back?)", netFn)
	}
	return ""
}
