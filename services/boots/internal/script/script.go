// Package script renders the iPXE scripts herd-boots serves: /auto.ipxe,
// the generic entry point, and each machine's own boot script.
//
// # PARAM_CMD
//
// iPXE built without PARAM_CMD (OVH's firmware, Debian's ipxe package,
// upstream's default BIOS builds) stops at `params`/`param` with "command
// not found". Every script comes in three shapes, chosen by Params:
//
//   - ParamsOff: no params/param at all; events go as GET query strings.
//   - ParamsOn: events are POSTed with a params list (imgfetch URL##params).
//   - ParamsAuto (default): `params || goto ..._get` — firmware with the
//     command POSTs, firmware without it falls back to the GET form.
//
// The global setting (--ipxe-params) is overridden per hardware by the
// record's metadata: {"boots": {"ipxe_params": "off"}}.
package script

import (
	"fmt"
	"net/url"
	"strings"
)

// Params is the ipxe-params setting.
type Params string

const (
	ParamsOn   Params = "on"
	ParamsOff  Params = "off"
	ParamsAuto Params = "auto"
)

// ParseParams parses an ipxe-params value; "" is ParamsAuto.
func ParseParams(s string) (Params, error) {
	switch Params(s) {
	case "":
		return ParamsAuto, nil
	case ParamsOn, ParamsOff, ParamsAuto:
		return Params(s), nil
	}
	return "", fmt.Errorf("ipxe-params %q: want on, off or auto", s)
}

// Config is what every script needs to know about the installation.
type Config struct {
	// BaseURL is boots' HTTP root as firmware reaches it, e.g.
	// "http://10.0.5.1:8080" (no trailing slash).
	BaseURL string
	// GRPCAuthority is herd-server's gRPC address for the worker
	// (host:port); CertURL where the worker fetches its CA.
	GRPCAuthority string
	CertURL       string
	// CASHA256 is the pin of the CA the worker must find at CertURL (hex
	// SHA-256 of its certificate's DER; herd-boots --ca-cert), "" for none.
	CASHA256 string
	// MetadataURL is herd-metadata's root, e.g. http://10.0.5.1:50061.
	MetadataURL string
	// Registry is the container registry the worker pulls actions from;
	// RegistryUser and RegistryPassword, when set, its credentials (a
	// registry behind htpasswd). The password is a secret: it goes on the
	// OSIE's kernel line only, never in a log (CheckKernelValue first).
	Registry         string
	RegistryUser     string
	RegistryPassword string
	// SyslogHost receives the OSIE's logs (boots' syslog receiver).
	SyslogHost string
	// Console is the default kernel console= value, e.g. ttyS0,115200.
	Console string
	// OSIEBaseURL, Kernel and Initrd are the defaults for a hardware's
	// netboot.osie. Kernel and Initrd may contain {arch}, replaced by the
	// machine's dhcp.arch (x86_64 when unset).
	OSIEBaseURL string
	Kernel      string
	Initrd      string
	// Retries bounds each fetch's retry loop (default 10), with
	// RetryDelay seconds between tries (default 3).
	Retries    int
	RetryDelay int
}

func (c Config) retries() int {
	if c.Retries <= 0 {
		return 10
	}
	return c.Retries
}

func (c Config) delay() int {
	if c.RetryDelay <= 0 {
		return 3
	}
	return c.RetryDelay
}

// MachinePath is the per-machine script route; mac is in iPXE's :hexhyp
// form (52-54-00-12-34-56).
func MachinePath(mac string) string { return "/machines/" + mac + "/boot.ipxe" }

// EventsPath receives boot progress events (GET query or POST form).
const EventsPath = "/events"

// The boot progress events machine scripts send; boots records these and
// no others (Events).
const (
	EventKernelFetched = "kernel_fetched"
	EventInitrdFetched = "initrd_fetched"
)

// Events is the fixed set of event names /events takes.
var Events = []string{EventKernelFetched, EventInitrdFetched}

// AutoNICs is how many interfaces (net0, net1, ...) auto.ipxe reports the
// MACs of, so that boots can tell an unknown caller which of its other
// interfaces herd knows.
const AutoNICs = 4

// AutoQuery is the query auto.ipxe adds to the machine path: the interface
// it identifies by (iface) and the MAC of each of the machine's first
// AutoNICs interfaces (net0=..., empty where there is none). Its presence
// tells boots that the caller is auto.ipxe, which prints what boots answers
// an unknown caller (UnknownCaller).
func AutoQuery() string {
	q := []string{"iface=${iface}"}
	for n := range AutoNICs {
		q = append(q, fmt.Sprintf("net%d=${net%d/mac:hexhyp}", n, n))
	}
	return strings.Join(q, "&")
}

// Auto renders /auto.ipxe. It identifies the machine by the MAC of the
// interface named in ${iface} when set (the OVH shape: the provider's
// iPXE does `ifclose net0; dhcp net1; set iface net1; chain .../auto.ipxe`),
// else by ${net0/mac}; boots falls back to the request's source address
// when the MAC is unknown. It chains to the per-machine script, retrying
// while that cannot be fetched, and exits when that script exits.
//
// When boots does not know the caller its answer (UnknownCaller) sets
// ${herdunknown} to 1 and fails; auto.ipxe then prints, once, the MAC and
// interface it identified with, the machine's interfaces, and what the
// script that chained it must do (ifclose the provider's NIC, set iface),
// before it retries. Nothing here needs the params command.
func Auto(c Config) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("#!ipxe")
	w("echo herd: auto.ipxe")
	w("set herdifaceset 1")
	w("set herdhintu 0")
	w("set herdhintn 0")
	w("isset ${iface} && goto herd_iface ||")
	w("set herdifaceset 0")
	w("set iface net0")
	w(":herd_iface")
	w("set herdmac ${${iface}/mac:hexhyp}")
	w("isset ${herdmac} || set herdmac ${net0/mac:hexhyp}")
	w("echo herd: identifying as ${herdmac} (interface ${iface})")
	w("set herdtry:int32 0")
	w(":herd_chain")
	w("set herdunknown 0")
	w("chain --autofree %s%s?%s || goto herd_chain_retry", c.BaseURL, MachinePath("${herdmac}"), AutoQuery())
	// The machine's script returned (netboot not allowed: it exits to
	// the next boot device): so does this one, rather than retry it.
	w("exit")
	retryHooked(w, "herdtry", "herd_chain", c.retries(), c.delay(), func() { autoHint(w, c) }, func() {
		w("iseq ${herdunknown} 1 && echo herd: herd-boots did not know MAC ${herdmac} (interface ${iface}): see above ||")
	})
	return b.String()
}

// autoHint writes what auto.ipxe prints at a failed chain, once per run
// each: for an unknown caller, its identity, its interfaces and the fix;
// for a chain that got no script at all, where the request went. Lines
// fit an 80-column console; iPXE's echo joins its words with one space,
// so there is no indentation.
func autoHint(w func(string, ...any), c Config) {
	w("iseq ${herdunknown} 1 || goto herd_hint_unreachable")
	w("iseq ${herdhintu} 1 && goto herd_hint_done ||")
	w("set herdhintu 1")
	w("echo herd: herd-boots knows no machine by this request:")
	w("echo herd: MAC ${herdmac}, interface ${iface}, address ${${iface}/ip}")
	w("iseq ${herdifaceset} 0 && echo herd: the script that chained auto.ipxe set no iface: auto.ipxe used net0 ||")
	w("echo herd: this machine's interfaces:")
	for n := range AutoNICs {
		w("isset ${net%d/mac} && echo herd: - net%d ${net%d/mac} ${net%d/ip} ||", n, n, n, n)
	}
	w("ifstat ||")
	for _, l := range wrap("iPXE sends a request through the interface its routing table picks, "+
		"not the one iface names: an open interface with a default route that comes first takes it, "+
		"with its own address and MAC. If herd's network is on netN, the script that chains auto.ipxe "+
		"must close the provider's interface and name herd's:", consoleWidth) {
		w("echo herd: %s", l)
	}
	w("echo herd: > ifclose net0")
	w("echo herd: > dhcp netN")
	w("echo herd: > set iface netN")
	w("echo herd: > chain --autofree %s/auto.ipxe", c.BaseURL)
	w("echo herd: or a hardware record must have the MAC ${herdmac}")
	w("goto herd_hint_done")
	w(":herd_hint_unreachable")
	w("iseq ${herdhintn} 1 && goto herd_hint_done ||")
	w("set herdhintn 1")
	w("echo herd: the machine script from %s failed (see the error above)", c.BaseURL)
	w("echo herd: for ${herdmac} (interface ${iface}, address ${${iface}/ip}).")
	for _, l := range wrap("A connection error or a timeout? If herd's network is not on the interface "+
		"whose route comes first, the script that chains auto.ipxe must ifclose that one and set iface netN.", consoleWidth) {
		w("echo herd: %s", l)
	}
	w(":herd_hint_done")
}

// consoleWidth is the words per echo line, after "herd: ", so that lines
// fit an 80-column console.
const consoleWidth = 72

// wrap cuts s into lines of at most width bytes at spaces (a longer word
// gets a line of its own).
func wrap(s string, width int) []string {
	var out []string
	line := ""
	for _, f := range strings.Fields(s) {
		if line != "" && len(line)+1+len(f) > width {
			out = append(out, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += f
	}
	if line != "" {
		out = append(out, line)
	}
	return out
}

// Reasons boots does not identify a caller; they are the values of the
// unknown-caller metric's reason label, so the set is closed.
const (
	ReasonNoMAC        = "no_mac"        // the address is unknown and the request names no MAC
	ReasonUnknownMAC   = "unknown_mac"   // neither the address nor the MAC is a hardware's
	ReasonUnknownIP    = "unknown_ip"    // --http-require-ip and the address is no hardware's
	ReasonOtherMachine = "other_machine" // the address is one hardware's, the MAC another's
	ReasonNoInterface  = "no_interface"  // the record holds no interface for the address
	// ReasonNotItsAddress: the MAC is a hardware's but the request did not
	// come from that machine's own address (its reservation, or in proxy
	// mode the address its DHCP request asked for), as boot events must.
	ReasonNotItsAddress = "not_its_address"
)

// Unknown is what boots knows of a caller it could not identify. Every
// field is one boots checked (a parsed MAC, an interface name of the
// form auto.ipxe sends, the connection's address): it is echoed to the
// caller's console.
type Unknown struct {
	MAC    string // the MAC the request named (aa:bb:...), "" when none or not a MAC
	Iface  string // the interface auto.ipxe identified by, "" when not sent
	Remote string // the request's source address
	Reason string // one of the Reason constants
	// KnownIface and KnownMAC: another of the caller's interfaces, as
	// auto.ipxe reported them, whose MAC a hardware record has.
	KnownIface, KnownMAC string
}

// UnknownHint says in one line why boots did not know the caller and what
// usually fixes it; boots logs it and puts it on the caller's console.
func UnknownHint(u Unknown) string {
	mac, iface := first(u.MAC, "(none)"), first(u.Iface, "the interface it used")
	if u.KnownIface != "" && u.KnownIface != u.Iface {
		return fmt.Sprintf("%s's MAC %s is known to herd, but the request came from %s with %s's MAC %s: "+
			"before chaining auto.ipxe, ifclose %s (while it is open its route wins) and set iface %s",
			u.KnownIface, u.KnownMAC, u.Remote, iface, mac, first(u.Iface, "net0"), u.KnownIface)
	}
	switch u.Reason {
	case ReasonNoMAC:
		return fmt.Sprintf("the request from %s names no MAC: chain auto.ipxe, which names the interface's MAC", u.Remote)
	case ReasonUnknownIP:
		return fmt.Sprintf("%s is no hardware's reserved address and boots serves reserved addresses only (--http-require-ip): "+
			"the request left through another interface than herd's (ifclose it, set iface to herd's) or that interface did not lease from herd", u.Remote)
	case ReasonOtherMachine:
		return fmt.Sprintf("%s is reserved for another hardware than MAC %s's: two records share an address or a MAC, "+
			"or the request left through an interface holding another machine's address", u.Remote, mac)
	case ReasonNoInterface:
		return fmt.Sprintf("the hardware record of %s has no interface with that address: push it again", u.Remote)
	case ReasonNotItsAddress:
		return fmt.Sprintf("MAC %s is a hardware's, but %s is neither its reserved address nor (proxy mode) the address its DHCP request asked for: "+
			"boots serves a machine's script and takes its boot events from its own address only "+
			"(behind NAT: herd-boots --http-require-ip=false)", mac, u.Remote)
	}
	return fmt.Sprintf("no hardware record has MAC %s or address %s: push one with this MAC (herd hardware push), "+
		"or, if herd's network is on another interface, ifclose the provider's and set iface to herd's before chaining auto.ipxe", mac, u.Remote)
}

// UnknownCaller is boots' answer to auto.ipxe when it does not know the
// caller: it says so on the console, sets ${herdunknown} for auto.ipxe
// (settings outlive the chained script) and fails, so auto.ipxe prints its
// hint and retries.
func UnknownCaller(u Unknown) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("#!ipxe")
	w("echo herd: herd-boots has no hardware for this caller (%s):", u.Reason)
	w("echo herd: MAC %s, interface %s, from %s", first(u.MAC, "(none)"), first(u.Iface, "?"), u.Remote)
	for _, l := range wrap(UnknownHint(u), consoleWidth) {
		w("echo herd: %s", l)
	}
	w("set herdunknown 1")
	w("exit 1")
	return b.String()
}

// retry writes a bounded retry loop: label_retry counts a failure and
// jumps back to label, until n failures end the script. A firmware without
// `inc` retries without bound (every few seconds) rather than failing.
func retry(w func(string, ...any), counter, label string, n, delay int) {
	retryHooked(w, counter, label, n, delay, nil, nil)
}

// retryHooked is retry with lines written at each failure (onRetry, before
// the count) and before giving up (onGiveUp); either may be nil.
func retryHooked(w func(string, ...any), counter, label string, n, delay int, onRetry, onGiveUp func()) {
	w(":%s_retry", label)
	if onRetry != nil {
		onRetry()
	}
	w("inc %s ||", counter)
	w("iseq ${%s} %d && goto %s_failed ||", counter, n, label)
	w("echo herd: %s failed (try ${%s} of %d), again in %ds", label, counter, n, delay)
	w("sleep %d ||", delay)
	w("goto %s", label)
	w(":%s_failed", label)
	if onGiveUp != nil {
		onGiveUp()
	}
	w("echo herd: giving up on %s after %d tries", label, n)
	w("exit 1")
}

// event writes the lines reporting event for mac, in the shape p asks.
func event(w func(string, ...any), c Config, p Params, id, mac, name string) {
	q := url.Values{"event": {name}, "hardware_id": {id}}
	get := c.BaseURL + EventsPath + "?" + q.Encode() + "&mac=" + mac
	post := func() {
		w("param event %s", name)
		w("param hardware_id %s", id)
		w("param mac %s", mac)
		w("imgfetch --name herdev %s%s##params && imgfree herdev ||", c.BaseURL, EventsPath)
	}
	switch p {
	case ParamsOff:
		w("imgfetch --name herdev %s && imgfree herdev ||", get)
	case ParamsOn:
		w("params")
		post()
	default:
		lbl := "herdev_" + name
		w("params || goto %s_get", lbl)
		post()
		w("goto %s_done", lbl)
		w(":%s_get", lbl)
		w("imgfetch --name herdev %s && imgfree herdev ||", get)
		w(":%s_done", lbl)
	}
}
