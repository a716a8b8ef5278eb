package redfish

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
	"github.com/herd-metal/herd/services/bmc/internal/driver/drivertest"
	"github.com/herd-metal/herd/services/bmc/internal/redfish/redfishtest"
)

func bmcOf(t *testing.T, addr, user, pass string) driver.BMC {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var p int
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	return driver.BMC{Protocol: driver.Redfish, Host: host, Port: p, Username: user, Password: pass}
}

func TestFixturePowerAndBoot(t *testing.T) {
	fx := redfishtest.New("admin", "fixture-pw")
	defer fx.Close()
	b := bmcOf(t, fx.Listener.Addr().String(), "admin", "fixture-pw")
	d := &Driver{Scheme: "http", Timeout: 5 * time.Second}
	ctx := context.Background()

	status := func(want driver.PowerState) {
		t.Helper()
		got, err := d.PowerStatus(ctx, b)
		if err != nil || got != want {
			t.Fatalf("PowerStatus = %q, %v; want %q", got, err, want)
		}
	}
	status(driver.StateOff)
	steps := []struct {
		action driver.PowerAction
		reset  string
		power  string
	}{
		{driver.PowerOn, "On", "On"},
		{driver.PowerReset, "ForceRestart", "On"},
		{driver.PowerCycle, "PowerCycle", "On"},
		{driver.PowerOff, "ForceOff", "Off"},
	}
	var resets []string
	for _, s := range steps {
		if err := d.Power(ctx, b, s.action); err != nil {
			t.Fatalf("Power(%s): %v", s.action, err)
		}
		resets = append(resets, s.reset)
		st := fx.State()
		if st.PowerState != s.power || !slices.Equal(st.Resets, resets) {
			t.Fatalf("after power %s: PowerState %s, resets %v; want %s, %v", s.action, st.PowerState, st.Resets, s.power, resets)
		}
	}
	status(driver.StateOff)

	boots := []struct {
		dev                   driver.BootDevice
		opt                   driver.BootOptions
		target, enabled, mode string
	}{
		{driver.BootPXE, driver.BootOptions{}, "Pxe", "Once", "Legacy"},
		{driver.BootDisk, driver.BootOptions{Persistent: true}, "Hdd", "Continuous", "Legacy"},
		{driver.BootBIOS, driver.BootOptions{EFI: true}, "BiosSetup", "Once", "UEFI"},
		{driver.BootPXE, driver.BootOptions{Persistent: true, EFI: true}, "Pxe", "Continuous", "UEFI"},
	}
	for _, c := range boots {
		if err := d.SetBootDevice(ctx, b, c.dev, c.opt); err != nil {
			t.Fatalf("SetBootDevice(%s, %+v): %v", c.dev, c.opt, err)
		}
		st := fx.State()
		if st.BootSourceOverrideTarget != c.target || st.BootSourceOverrideEnabled != c.enabled || st.BootSourceOverrideMode != c.mode {
			t.Fatalf("after bootdev %s %+v: Boot = %s/%s/%s, want %s/%s/%s", c.dev, c.opt,
				st.BootSourceOverrideTarget, st.BootSourceOverrideEnabled, st.BootSourceOverrideMode, c.target, c.enabled, c.mode)
		}
	}
	// Every call logged in and out: no session left on the BMC.
	if st := fx.State(); st.OpenSessions != 0 || st.Logins != 2+len(steps)+len(boots) {
		t.Fatalf("sessions open %d, logins %d; want 0, %d", st.OpenSessions, st.Logins, 2+len(steps)+len(boots))
	}
}

func TestWrongCredentials(t *testing.T) {
	fx := redfishtest.New("admin", "fixture-pw")
	defer fx.Close()
	b := bmcOf(t, fx.Listener.Addr().String(), "admin", "not-the-pw")
	err := (&Driver{Scheme: "http", Timeout: 5 * time.Second}).Power(context.Background(), b, driver.PowerOn)
	drivertest.WantErr(t, err, driver.ErrAuth, b, "HTTP 401", "Base.1.8.ResourceAtUriUnauthorized")
	if st := fx.State(); st.PowerState != "Off" || len(st.Resets) != 0 {
		t.Fatalf("the system changed without a session: %+v", st)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	b := bmcOf(t, addr, "admin", "pw")
	_, err = (&Driver{Scheme: "http", Timeout: 5 * time.Second}).PowerStatus(context.Background(), b)
	drivertest.WantErr(t, err, driver.ErrUnreachable, b, "connection refused")
}

// hangingServer accepts, reads the request head, answers the start of
// a reply and then says nothing more until the test ends.
func hangingServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"@odata.id\": \"/redfish/v1\", \"Sys"))
				<-done
			}()
		}
	}()
	return l.Addr().String()
}

func TestHangingMidAnswer(t *testing.T) {
	b := bmcOf(t, hangingServer(t), "admin", "pw")
	start := time.Now()
	_, err := (&Driver{Scheme: "http", Timeout: 500 * time.Millisecond}).PowerStatus(context.Background(), b)
	drivertest.WantErr(t, err, driver.ErrTimeout, b)
	// Bounded: the call ends near its timeout, not when the BMC lets go.
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("PowerStatus took %s with a 500ms timeout", el)
	}
}

func TestMalformedReplies(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		words   []string
	}{
		{"html service root", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>login</body></html>"))
		}, nil},
		{"cut JSON", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"@odata.id": "/redfish/v1", "Systems": {"@odata.id":`))
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			b := bmcOf(t, srv.Listener.Addr().String(), "admin", "pw")
			_, err := (&Driver{Scheme: "http", Timeout: 5 * time.Second}).PowerStatus(context.Background(), b)
			drivertest.WantErr(t, err, driver.ErrMalformed, b, c.words...)
		})
	}
}

func TestUnknownPowerState(t *testing.T) {
	fx := redfishtest.New("admin", "pw")
	defer fx.Close()
	fx.SetPowerState("Sideways") // not a Redfish PowerState
	b := bmcOf(t, fx.Listener.Addr().String(), "admin", "pw")
	_, err := (&Driver{Scheme: "http", Timeout: 5 * time.Second}).PowerStatus(context.Background(), b)
	drivertest.WantErr(t, err, driver.ErrMalformed, b, `PowerState "Sideways"`)
}

func TestBadInputSendsNothing(t *testing.T) {
	fx := redfishtest.New("admin", "pw")
	defer fx.Close()
	b := bmcOf(t, fx.Listener.Addr().String(), "admin", "pw")
	d := &Driver{Scheme: "http", Timeout: 5 * time.Second}
	drivertest.WantErr(t, d.Power(context.Background(), b, "explode"), driver.ErrBadInput, b, "explode")
	drivertest.WantErr(t, d.SetBootDevice(context.Background(), b, "floppy", driver.BootOptions{}), driver.ErrBadInput, b, "floppy")
	ipmiB := b
	ipmiB.Protocol = driver.IPMI
	drivertest.WantErr(t, d.Power(context.Background(), ipmiB, driver.PowerOn), driver.ErrBadInput, ipmiB, "not a Redfish BMC")
	if st := fx.State(); st.Logins != 0 {
		t.Fatalf("bad input reached the BMC: %d logins", st.Logins)
	}
}
