package main

import (
	"net"
	"strings"
	"testing"
)

// TestStolenScript (issue 14, finding 1), reservation mode: from an
// address no hardware owns, a host asks for a machine's script by its MAC,
// as auto.ipxe's chain and directly. It gets the unknown-caller answer
// (reason not_its_address, counted), never the machine's worker
// credential; the machine, from its reserved address, gets its script.
// --http-require-ip=false (NAT setups) brings the old behaviour back.
func TestStolenScript(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x0a}
	l := newLab(t, mac)
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	for _, a := range []string{"10.77.0.10", attackerIP} {
		l.cli.IP("addr", "add", a+"/24", "dev", "hc0")
	}
	token := l.server.WorkerToken(hwKnown)
	victim := strings.ReplaceAll(mac.String(), ":", "-")
	attacker, machine := l.httpFrom(attackerIP), l.httpFrom("10.77.0.10")

	code, body := call(t, attacker, "GET", "/machines/"+victim+"/boot.ipxe", "")
	if code != 404 || strings.Contains(body, token) || strings.Contains(body, "herd.token") {
		t.Errorf("stolen script: %d, want a 404 without the credential:\n%s", code, body)
	}
	code, body = call(t, attacker, "GET", "/machines/"+victim+"/boot.ipxe?iface=net0&net0="+victim, "")
	if code != 200 || strings.Contains(body, "herd.token") || !strings.Contains(body, "(not_its_address)") {
		t.Errorf("stolen script through auto.ipxe's chain: %d, want the console hint (not_its_address):\n%s", code, body)
	}
	code, body = call(t, machine, "GET", "/machines/"+victim+"/boot.ipxe", "")
	if code != 200 || !strings.Contains(body, "herd.token="+token) {
		t.Errorf("the machine's own script from its reserved address: %d\n%s", code, body)
	}
	if got := metric(l.metrics(t), `herd_boots_unknown_callers_total{reason="not_its_address",route="script"}`); got != 2 {
		t.Errorf("not_its_address script callers = %v, want 2", got)
	}
	if logs := l.waitLog(`msg="http: script for an unknown caller"`, "reason=not_its_address"); !strings.Contains(logs, "reason=not_its_address") {
		t.Errorf("no warning for the stolen script")
	}
}

// TestStolenScriptNATOptOut: --http-require-ip=false identifies callers
// by the MAC they name, as NAT setups need (and re-opens the theft,
// docs/security.md).
func TestStolenScriptNATOptOut(t *testing.T) {
	t.Parallel()
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x0b}
	l := newLab(t, mac, "--http-require-ip=false")
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	l.cli.IP("addr", "add", "10.77.0.200/24", "dev", "hc0") // the NAT gateway's
	victim := strings.ReplaceAll(mac.String(), ":", "-")
	code, body := call(t, l.httpFrom("10.77.0.200"), "GET", "/machines/"+victim+"/boot.ipxe", "")
	if code != 200 || !strings.Contains(body, "herd.token="+l.server.WorkerToken(hwKnown)) {
		t.Errorf("script through NAT with --http-require-ip=false: %d\n%s", code, body)
	}
}

// TestStolenScriptProxy (issue 14, finding 1), proxy mode: the machine's
// own address is the one its DHCP request asked the site's server for.
// Before that request, and from any other address after it, the script is
// refused; from the leased address it is served.
func TestStolenScriptProxy(t *testing.T) {
	t.Parallel()
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x0c}
	l := newLab(t, mac, "--dhcp-mode", "proxy")
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	const leased = "10.77.0.150"
	for _, a := range []string{leased, attackerIP} {
		l.cli.IP("addr", "add", a+"/24", "dev", "hc0")
	}
	token := l.server.WorkerToken(hwKnown)
	path := "/machines/" + strings.ReplaceAll(mac.String(), ":", "-") + "/boot.ipxe"
	machine, attacker := l.httpFrom(leased), l.httpFrom(attackerIP)
	if code, body := call(t, machine, "GET", path, ""); code != 404 || strings.Contains(body, "herd.token") {
		t.Errorf("script for %s before any DHCP request: %d, want 404", leased, code)
	}

	requestLease(t, l, mac, leased)
	if code, body := call(t, attacker, "GET", path, ""); code != 404 || strings.Contains(body, token) {
		t.Errorf("stolen script from %s: %d, want 404 without the credential", attackerIP, code)
	}
	if code, body := call(t, machine, "GET", path, ""); code != 200 || !strings.Contains(body, "herd.token="+token) {
		t.Errorf("the machine's script from its leased address %s: %d\n%s", leased, code, body)
	}
}
