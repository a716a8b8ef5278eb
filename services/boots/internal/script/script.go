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
	// MetadataURL is herd-metadata's root, e.g. http://10.0.5.1:50061.
	MetadataURL string
	// Registry is the container registry the worker pulls actions from.
	Registry string
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

// Auto renders /auto.ipxe. It identifies the machine by the MAC of the
// interface named in ${iface} when set (the OVH shape: the provider's
// iPXE does `ifclose net0; dhcp net1; set iface net1; chain .../auto.ipxe`),
// else by ${net0/mac}; boots falls back to the request's source address
// when the MAC is unknown. It chains to the per-machine script, retrying
// while that cannot be fetched, and exits when that script exits.
func Auto(c Config) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("#!ipxe")
	w("echo herd: auto.ipxe")
	w("isset ${iface} && goto herd_iface ||")
	w("set iface net0")
	w(":herd_iface")
	w("set herdmac ${${iface}/mac:hexhyp}")
	w("isset ${herdmac} || set herdmac ${net0/mac:hexhyp}")
	w("echo herd: identifying as ${herdmac} (interface ${iface})")
	w("set herdtry:int32 0")
	w(":herd_chain")
	w("chain --autofree %s%s || goto herd_chain_retry", c.BaseURL, MachinePath("${herdmac}"))
	// The machine's script returned (netboot not allowed: it exits to
	// the next boot device): so does this one, rather than retry it.
	w("exit")
	retry(w, "herdtry", "herd_chain", c.retries(), c.delay())
	return b.String()
}

// retry writes a bounded retry loop: label_retry counts a failure and
// jumps back to label, until n failures end the script. A firmware without
// `inc` retries without bound (every few seconds) rather than failing.
func retry(w func(string, ...any), counter, label string, n, delay int) {
	w(":%s_retry", label)
	w("inc %s ||", counter)
	w("iseq ${%s} %d && goto %s_failed ||", counter, n, label)
	w("echo herd: %s failed (try ${%s} of %d), again in %ds", label, counter, n, delay)
	w("sleep %d ||", delay)
	w("goto %s", label)
	w(":%s_failed", label)
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
