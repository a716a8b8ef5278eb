package ipmi

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
	"github.com/herd-metal/herd/services/bmc/internal/driver/drivertest"
)

// TestBootFlagBytes checks the boot flags parameter (IPMI v2.0 table
// 28-14, parameter 5) on the wire: data 1 bit 7 valid, bit 6 persistent,
// bit 5 EFI; data 2 bits 5:2 the device selector.
func TestBootFlagBytes(t *testing.T) {
	cases := []struct {
		dev   driver.BootDevice
		opt   driver.BootOptions
		data1 byte
		data2 byte
	}{
		{driver.BootPXE, driver.BootOptions{}, 0x80, 0x01 << 2},
		{driver.BootPXE, driver.BootOptions{Persistent: true}, 0xc0, 0x01 << 2},
		{driver.BootPXE, driver.BootOptions{EFI: true}, 0xa0, 0x01 << 2},
		{driver.BootDisk, driver.BootOptions{Persistent: true, EFI: true}, 0xe0, 0x02 << 2},
		{driver.BootBIOS, driver.BootOptions{}, 0x80, 0x06 << 2},
	}
	for _, c := range cases {
		f, ok := bootFlags(c.dev, c.opt)
		if !ok {
			t.Fatalf("bootFlags(%s) refused", c.dev)
		}
		got := f.Pack()
		if len(got) != 5 || got[0] != c.data1 || got[1] != c.data2 || !bytes.Equal(got[2:], []byte{0, 0, 0}) {
			t.Errorf("bootFlags(%s, %+v) = % x, want %02x %02x 00 00 00", c.dev, c.opt, got, c.data1, c.data2)
		}
	}
	if _, ok := bootFlags("floppy", driver.BootOptions{}); ok {
		t.Error("bootFlags accepted floppy")
	}
}

func TestChassisControlValues(t *testing.T) {
	// IPMI v2.0 table 28-4: 0 down, 1 up, 2 cycle, 3 hard reset.
	for a, want := range map[driver.PowerAction]uint8{driver.PowerOff: 0, driver.PowerOn: 1, driver.PowerCycle: 2, driver.PowerReset: 3} {
		if got, ok := chassisControl(a); !ok || uint8(got) != want {
			t.Errorf("chassisControl(%s) = %d, %v; want %d", a, got, ok, want)
		}
	}
	if _, ok := chassisControl("explode"); ok {
		t.Error("chassisControl accepted explode")
	}
}

func TestUnreachable(t *testing.T) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close() // nothing listens: the kernel answers port unreachable
	b := driver.BMC{Protocol: driver.IPMI, Host: "127.0.0.1", Port: port, Username: "u", Password: "secret-pw"}
	_, err = (&Driver{Timeout: 3 * time.Second}).PowerStatus(context.Background(), b)
	drivertest.WantErr(t, err, driver.ErrUnreachable, b, "connection refused")
}

// udpServer answers every datagram with reply(datagram), or never when
// reply returns nil.
func udpServer(t *testing.T, reply func([]byte) []byte) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n]); r != nil {
				_, _ = c.WriteTo(r, from)
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func TestSilentBMCTimesOut(t *testing.T) {
	port := udpServer(t, func([]byte) []byte { return nil })
	b := driver.BMC{Protocol: driver.IPMI, Host: "127.0.0.1", Port: port, Username: "u", Password: "secret-pw"}
	start := time.Now()
	_, err := (&Driver{Timeout: 500 * time.Millisecond}).PowerStatus(context.Background(), b)
	drivertest.WantErr(t, err, driver.ErrTimeout, b)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("call took %s with a 500ms timeout", el)
	}
}

func TestMalformedReplies(t *testing.T) {
	cases := map[string]func([]byte) []byte{
		"garbage":   func([]byte) []byte { return []byte("HTTP/1.1 400 Bad Request\r\n\r\n") },
		"short":     func([]byte) []byte { return []byte{0x06} },
		"rmcp only": func([]byte) []byte { return []byte{0x06, 0x00, 0xff, 0x07} },
		"echo":      func(p []byte) []byte { return append([]byte(nil), p...) },
	}
	for name, reply := range cases {
		t.Run(name, func(t *testing.T) {
			port := udpServer(t, reply)
			b := driver.BMC{Protocol: driver.IPMI, Host: "127.0.0.1", Port: port, Username: "u", Password: "secret-pw"}
			_, err := (&Driver{Timeout: 2 * time.Second}).PowerStatus(context.Background(), b)
			var de *driver.Error
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a driver.Error", err)
			}
			// Each of these is an answer, and none a reply: malformed,
			// not timed out nor a BMC's completion code (an echoed request
			// read as a response has its first data byte, 0x8e, where the
			// completion code goes).
			drivertest.WantErr(t, err, driver.ErrMalformed, b)
			if name == "echo" && !strings.Contains(err.Error(), "is a request") {
				t.Fatalf("err = %v, want it to say the reply is a request", err)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	d := &Driver{Timeout: time.Second}
	ok := driver.BMC{Protocol: driver.IPMI, Host: "127.0.0.1", Port: 623, Username: "u", Password: "pw"}
	long := ok
	long.Username = strings.Repeat("x", 17)
	noPort := ok
	noPort.Port = 0
	rf := ok
	rf.Protocol = driver.Redfish
	drivertest.WantErr(t, d.Power(context.Background(), ok, "explode"), driver.ErrBadInput, ok, "explode")
	drivertest.WantErr(t, d.SetBootDevice(context.Background(), ok, "floppy", driver.BootOptions{}), driver.ErrBadInput, ok, "floppy")
	drivertest.WantErr(t, d.Power(context.Background(), long, driver.PowerOn), driver.ErrBadInput, long, "user name")
	drivertest.WantErr(t, d.Power(context.Background(), noPort, driver.PowerOn), driver.ErrBadInput, noPort, "port 0")
	drivertest.WantErr(t, d.Power(context.Background(), rf, driver.PowerOn), driver.ErrBadInput, rf, "not an IPMI BMC")
}

// The session-less Get Channel Authentication Capabilities go-ipmi sends
// for lanplus (RMCP+ framing, auth type 6), and what goes on the wire:
// the same IPMI message in v1.5 framing, auth type none.
func TestPreSession15(t *testing.T) {
	msg := []byte{0x20, 0x18, 0xc8, 0x81, 0x04, 0x38, 0x8e, 0x04, 0xb1}
	rmcpp := append([]byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x00}, msg...)
	want := append([]byte{0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09}, msg...)
	if got := preSession15(rmcpp); !bytes.Equal(got, want) {
		t.Fatalf("preSession15 = % x\nwant          % x", got, want)
	}
	inSession := append([]byte(nil), rmcpp...)
	inSession[6] = 0x01 // session id set
	for name, p := range map[string][]byte{
		"in a session":  inSession,
		"open session":  append([]byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00}, 0, 0),
		"v1.5 already":  want,
		"length wrong":  rmcpp[:len(rmcpp)-1],
		"not rmcp ipmi": {0x06, 0x00, 0xff, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		if got := preSession15(p); got != nil {
			t.Errorf("%s: preSession15 rewrote % x", name, p)
		}
	}
}

func TestNotAReply(t *testing.T) {
	req15 := []byte{0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x20, 0x18, 0xc8, 0x81, 0x04, 0x38, 0x8e, 0x04, 0xb1}
	res15 := []byte{0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x81, 0x1c, 0x63, 0x20, 0x04, 0x38, 0x00, 0x01, 0x97, 0x04, 0x03, 0, 0, 0, 0, 0x9a}
	reqPlus := []byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x00, 0x20, 0x18, 0xc8, 0x81, 0x04, 0x38, 0x8e, 0x04, 0xb1}
	openReq := []byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x00}
	openRes := []byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0x24, 0x00}
	encrypted := []byte{0x06, 0x00, 0xff, 0x07, 0x06, 0xc0, 1, 2, 3, 4, 0, 0, 0, 1, 0x20, 0x00, 0x20, 0x18}
	for name, c := range map[string]struct {
		p       []byte
		request bool
	}{
		"v1.5 request":      {req15, true},
		"v1.5 response":     {res15, false},
		"rmcp+ request":     {reqPlus, true},
		"open session req":  {openReq, true},
		"open session resp": {openRes, false},
		"encrypted":         {encrypted, false},
		"short":             {[]byte{0x06}, false},
	} {
		why := notAReply(c.p)
		if (why != "") != c.request {
			t.Errorf("%s: notAReply = %q, want refused %v", name, why, c.request)
		}
	}
}

// An RAKP failure carries no key-dependent bytes into the Error.
func TestAuthDetailHasNoHMAC(t *testing.T) {
	b := driver.BMC{Protocol: driver.IPMI, Host: "127.0.0.1", Port: 623, Username: "u", Password: "pw"}
	err := classify(context.Background(), b, "power on", "", errors.New("rakp2 authcode not equal, console: 72f46f581ae1df047f0dd2832a8fab54a2d57d74, bmc: 31ec9bc7731b74e579376885b40eb32c2b0082ab"))
	drivertest.WantErr(t, err, driver.ErrAuth, b, "authcode not equal")
	if strings.Contains(err.Error(), "72f46f58") || strings.Contains(err.Error(), "31ec9bc7") {
		t.Fatalf("error %q holds RAKP HMACs", err)
	}
}

// A timeout while setting the session's privilege is a timeout, though
// the step's name says "privilege"; a refusal of the user is auth even
// when a later cipher suite went unanswered.
func TestClassifyOrder(t *testing.T) {
	b := driver.BMC{Protocol: driver.IPMI, Host: "127.0.0.1", Port: 623, Username: "u", Password: "pw"}
	ctx := context.Background()
	drivertest.WantErr(t, classify(ctx, b, "power on", "", errors.New("SetSessionPrivilegeLevel to (ADMINISTRATOR) failed, err: read udp: i/o timeout")), driver.ErrTimeout, b)
	drivertest.WantErr(t, classify(ctx, b, "power on", "", errors.New("cipher suite id (3), err: the return status of rakp2 has error: Unauthorized name\ncipher suite id (12), err: i/o timeout")), driver.ErrAuth, b)
	drivertest.WantErr(t, classify(ctx, b, "power on", "the reply is a request", errors.New("ipmiRes CompletionCode (0x8e) is not normal")), driver.ErrMalformed, b, "is a request")
}
