package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// httpFrom is an HTTP client in the client namespace whose connections
// leave from ip.
func (l *lab) httpFrom(ip string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = l.cli.Do(func() error {
				var e error
				c, e = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext(ctx, network, addr)
				return e
			})
			return c, err
		}}}
}

// call GETs boots' path from c and returns the status and body.
func call(t *testing.T, c *http.Client, method, path, form string) (int, string) {
	t.Helper()
	var res *http.Response
	var err error
	if method == "POST" {
		res, err = c.Post(bootsURL+path, "application/x-www-form-urlencoded", strings.NewReader(form))
	} else {
		res, err = c.Get(bootsURL + path)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestForgedBootEvents (issue 14, finding 2), reservation mode: from an
// address no hardware owns, a host sends boot events naming a machine's
// MAC, GET and POST, and a thousand invented event names. None reaches
// the machine's workflow events; the invented names are refused with a
// 400 naming the allowed set and counted under one label; the machine's
// own event, from its reserved address, is recorded.
func TestForgedBootEvents(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x08}
	l := newLab(t, mac)
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	for _, a := range []string{"10.77.0.10", attackerIP} {
		l.cli.IP("addr", "add", a+"/24", "dev", "hc0")
	}
	l.server.MustHerd("version: \"0.1\"\nname: events\ntasks:\n  - name: t\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: a\n        image: noop\n", "template", "create")
	wf := l.server.CreateWorkflow("events", `{"device_1":"`+mac.String()+`"}`)
	victim := strings.ReplaceAll(mac.String(), ":", "-")
	attacker, machine := l.httpFrom(attackerIP), l.httpFrom("10.77.0.10")

	if code, _ := call(t, attacker, "GET", "/events?event=kernel_fetched&mac="+victim, ""); code != 404 {
		t.Errorf("forged GET event: %d, want 404", code)
	}
	if code, _ := call(t, attacker, "POST", "/events", "event=kernel_fetched&mac="+victim); code != 404 {
		t.Errorf("forged POST event: %d, want 404", code)
	}
	for i := range 1000 {
		code, body := call(t, attacker, "GET", fmt.Sprintf("/events?event=forged_%d&mac=%s", i, victim), "")
		if code != 400 || !strings.Contains(body, "want one of kernel_fetched, initrd_fetched") {
			t.Fatalf("invented event %d: %d %q, want a 400 naming the allowed events", i, code, body)
		}
	}
	// The machine itself, from its reserved address.
	if code, _ := call(t, machine, "GET", "/events?event=initrd_fetched&mac="+victim, ""); code != 200 {
		t.Errorf("the machine's own event: %d", code)
	}
	// Notes reach herd-server in order: once the machine's is there, any
	// forged one would be too.
	var events string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if events = l.server.MustHerd("", "workflow", "events", wf); strings.Contains(events, "initrd fetched") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the machine's own event never reached workflow %s:\n%s", wf, events)
		}
	}
	if strings.Contains(events, "kernel fetched") || strings.Contains(events, "forged") {
		t.Errorf("forged events on the machine's workflow:\n%s", events)
	}

	page := l.metrics(t)
	series := regexp.MustCompile(`(?m)^herd_boots_events_total\{event="([^"]+)"\}`).FindAllStringSubmatch(page, -1)
	var labels []string
	for _, m := range series {
		labels = append(labels, m[1])
	}
	if fmt.Sprint(labels) != "[initrd_fetched kernel_fetched other script_served]" {
		t.Errorf("herd_boots_events_total has series %v, want the fixed four", labels)
	}
	for sample, want := range map[string]float64{
		`herd_boots_events_total{event="other"}`:                                   1000,
		`herd_boots_events_total{event="kernel_fetched"}`:                          0,
		`herd_boots_events_total{event="initrd_fetched"}`:                          1,
		`herd_boots_unknown_callers_total{reason="not_its_address",route="event"}`: 2,
	} {
		if got := metric(page, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	if logs := l.waitLog(`msg="http: boot event from an unknown caller"`, "reason=not_its_address"); !strings.Contains(logs, "reason=not_its_address") {
		t.Errorf("no warning for the forged events")
	}
}

// TestForgedBootEventsProxy (issue 14, finding 2), proxy mode: the
// machine's address comes from another DHCP server; boots learns it from
// the machine's DHCPREQUEST (a real broadcast on the link) and takes the
// machine's events from that address only, not from a host no hardware
// owns that names its MAC.
func TestForgedBootEventsProxy(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x09}
	l := newLab(t, mac, "--dhcp-mode", "proxy")
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	const leased = "10.77.0.150" // what the site's DHCP server gave it
	for _, a := range []string{leased, attackerIP} {
		l.cli.IP("addr", "add", a+"/24", "dev", "hc0")
	}
	victim := strings.ReplaceAll(mac.String(), ":", "-")
	path := "/events?" + url.Values{"event": {"kernel_fetched"}}.Encode() + "&mac=" + victim
	machine, attacker := l.httpFrom(leased), l.httpFrom(attackerIP)
	if code, _ := call(t, machine, "GET", path, ""); code != 404 {
		t.Errorf("event from %s before any DHCP request: %d, want 404", leased, code)
	}

	requestLease(t, l, mac, leased)
	if code, _ := call(t, attacker, "GET", path, ""); code != 404 {
		t.Errorf("forged event from %s: %d, want 404", attackerIP, code)
	}
	if code, _ := call(t, machine, "GET", path, ""); code != 200 {
		t.Errorf("the machine's event from its leased address %s: %d, want 200", leased, code)
	}
	logs := l.waitLog(`msg="boot event"`)
	if n := strings.Count(logs, `msg="boot event" event=kernel_fetched`); n != 1 {
		t.Errorf("%d boot events recorded, want the machine's one", n)
	}
	if !strings.Contains(lineWith(logs, `msg="boot event"`), "remote="+leased+":") {
		t.Errorf("the recorded event is not the machine's: %s", lineWith(logs, `msg="boot event"`))
	}
}

// requestLease sends the machine's DHCPREQUEST for leased to the site's
// server (10.77.0.2), broadcast from the lab's client side as firmware
// sends it, and waits until boots has seen it: proxy mode's lease book
// then holds leased for mac.
func requestLease(t *testing.T, l *lab, mac net.HardwareAddr, leased string) {
	t.Helper()
	var conn net.PacketConn
	if err := l.cli.Do(func() error {
		var err error
		conn, err = server4.NewIPv4UDPConn("hc0", &net.UDPAddr{Port: 68})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(leased))), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 2))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if metric(l.metrics(t), `herd_boots_dhcp_packets_total{outcome="ignored",type="REQUEST"}`) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("boots never saw the DHCPREQUEST")
		}
	}
}
