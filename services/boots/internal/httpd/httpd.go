// Package httpd is herd-boots' HTTP side: the iPXE scripts (/auto.ipxe and
// each machine's /machines/{mac}/boot.ipxe), boot progress events
// (/events), the iPXE binaries for HTTP boot clients (/ipxe/{file}), an
// optional OSIE directory (/osie/), and /metrics, /healthz, /version.
package httpd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/boots/internal/hw"
	"github.com/herd-metal/herd/services/boots/internal/script"
	"github.com/herd-metal/herd/services/boots/internal/tftp"
)

// Machines is the hardware the HTTP side knows (pkg/inventory).
type Machines interface {
	ByMAC(mac net.HardwareAddr) (inventory.Machine, bool)
	ByIP(ip netip.Addr) (inventory.Machine, bool)
}

// Config is the HTTP side's settings.
type Config struct {
	Script script.Config
	// ScriptHTTPS, when its BaseURL is set, is Script for requests that
	// came over HTTPS (herd-boots --https-addr): its URLs are https://, so
	// that firmware which fetched its script over HTTPS fetches the next
	// script, its kernel, initrd and events over HTTPS too.
	ScriptHTTPS script.Config
	// Params is the global ipxe-params; per hardware metadata
	// {"boots": {"ipxe_params": ...}} overrides it.
	Params script.Params
	// RequireIP serves a machine's script (which carries its worker
	// credential) only to the machine's own address (IdentifyOwn): one of
	// its reserved interface IPs, or in proxy mode the address its DHCP
	// request asked for (Leases). herd-boots' --http-require-ip, on by
	// default. Off, a caller whose address is not in the inventory is
	// identified by the MAC it names — for machines that reach boots
	// through NAT; anyone who can name a MAC then gets that machine's
	// credential (docs/security.md). Either way a caller whose address is
	// in the inventory gets its own machine or a 404.
	RequireIP bool
	// Binaries serves /ipxe/{file}; nil disables the route.
	Binaries *tftp.Dir
	// OSIEDir serves /osie/ from a directory when set.
	OSIEDir string
	// WriteTimeout, when set, bounds each chunk of a download (/ipxe/,
	// /osie/) rather than the whole of it (Limits.Write).
	WriteTimeout time.Duration
	// Notes, when set, receives boot progress for the machine's workflow
	// events (herd-server's RecordBootEvent).
	Notes Notes
	// Leases, in proxy mode, is the address each machine's DHCP request
	// asked the other server for: with its reservation, the machine's own
	// address, the only one its boot events are taken from. Nil in
	// reservation mode.
	Leases Leases
}

// Leases is the address a MAC took from another DHCP server
// (internal/leases).
type Leases interface {
	Address(mac net.HardwareAddr) (netip.Addr, bool)
}

// Notes takes boot progress notes; Record must not block.
type Notes interface {
	Record(hwID, message string)
}

// Server is the HTTP handler set.
type Server struct {
	cfg      Config
	machines Machines
	log      *slog.Logger
	renders  *prometheus.CounterVec
	events   map[string]prometheus.Counter // by eventLabels
	unknowns *prometheus.CounterVec
	// quiet holds back repeated unknown-caller lines; now is its clock.
	quiet *throttle
	now   func() time.Time
	mux   *http.ServeMux
}

// New builds the handler; reg receives boots' HTTP metrics and is served
// on /metrics. healthy backs /healthz.
func New(cfg Config, machines Machines, log *slog.Logger, reg *prometheus.Registry, healthy func(context.Context) error) (*Server, error) {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_boots_events_total",
		Help: "Boot progress, by event: script_served, the events machine scripts send (" + strings.Join(script.Events, ", ") +
			") from the machine's own address, and " + eventOther + " (requests naming any other event, refused)."}, []string{"event"})
	s := &Server{cfg: cfg, machines: machines, log: log, mux: http.NewServeMux(), events: map[string]prometheus.Counter{},
		renders: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_boots_script_renders_total",
			Help: "iPXE scripts served, by script (auto, osie, custom_url, custom_contents, not_allowed, unknown) and ipxe-params mode."}, []string{"script", "params"}),
		unknowns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_boots_unknown_callers_total",
			Help: "Script and event requests from callers boots could not identify, by route (script, event) and reason (" +
				strings.Join(reasons, ", ") + ")."}, []string{"route", "reason"}),
		quiet: newThrottle(unknownLogEvery, unknownLogKeys, unknownLogLines),
		now:   time.Now,
	}
	// The event label's values are fixed: whatever names requests send,
	// the metric has these series and no others.
	for _, e := range append([]string{eventScriptServed, eventOther}, script.Events...) {
		s.events[e] = events.WithLabelValues(e)
	}
	reg.MustRegister(s.renders, events, s.unknowns)
	observe.Mount(s.mux, "herd-boots", reg, healthy)
	s.mux.HandleFunc("GET /auto.ipxe", s.auto)
	s.mux.HandleFunc("GET /machines/{mac}/boot.ipxe", s.machine)
	s.mux.HandleFunc("GET "+script.EventsPath, s.event)
	s.mux.HandleFunc("POST "+script.EventsPath, s.event)
	if cfg.Binaries != nil {
		s.mux.Handle("GET /ipxe/{file}", download(http.HandlerFunc(s.binary), cfg.WriteTimeout))
	}
	if cfg.OSIEDir != "" {
		root, err := os.OpenRoot(cfg.OSIEDir)
		if err != nil {
			return nil, err
		}
		s.mux.Handle("GET /osie/", download(osieFiles{root}, cfg.WriteTimeout))
	}
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func writeScript(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, body)
}

// scriptConfig is the script configuration for r: ScriptHTTPS when r came
// over TLS (and one is set), else Script.
func (s *Server) scriptConfig(r *http.Request) script.Config {
	if r.TLS != nil && s.cfg.ScriptHTTPS.BaseURL != "" {
		return s.cfg.ScriptHTTPS
	}
	return s.cfg.Script
}

// scheme names r's transport for logs.
func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func (s *Server) auto(w http.ResponseWriter, r *http.Request) {
	s.renders.WithLabelValues("auto", "").Inc()
	s.log.Info("http: auto.ipxe", "script", "auto", "remote", r.RemoteAddr, "scheme", scheme(r))
	writeScript(w, script.Auto(s.scriptConfig(r)))
}

func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ParseMAC reads a MAC in iPXE's :hexhyp form or with colons.
func ParseMAC(s string) (net.HardwareAddr, error) {
	if len(s) != 17 {
		return nil, errors.New("not a 6-byte MAC")
	}
	m, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Identify finds the calling machine and the interface it boots from:
// by the caller's address when the inventory has it (then a named MAC must
// be one of that machine's), else, unless requireIP, by the named MAC.
// why is "" when it found them, else one of script's Reason constants.
func Identify(ms Machines, macStr string, ip netip.Addr, requireIP bool) (m inventory.Machine, i *hardware.Hardware_Network_Interface, why string) {
	mac, macErr := ParseMAC(macStr)
	if m, ok := ms.ByIP(ip); ip.IsValid() && ok {
		rec := m.Hardware()
		if macErr == nil {
			if i, ok := hw.Interface(rec, mac); ok {
				return m, i, ""
			}
			if _, known := ms.ByMAC(mac); known {
				return inventory.Machine{}, nil, script.ReasonOtherMachine
			}
		}
		if i, ok := hw.InterfaceByIP(rec, ip); ok {
			return m, i, ""
		}
		return inventory.Machine{}, nil, script.ReasonNoInterface
	}
	switch {
	case requireIP:
		return inventory.Machine{}, nil, script.ReasonUnknownIP
	case macErr != nil:
		return inventory.Machine{}, nil, script.ReasonNoMAC
	}
	m, ok := ms.ByMAC(mac)
	if !ok {
		return inventory.Machine{}, nil, script.ReasonUnknownMAC
	}
	if i, ok := hw.Interface(m.Hardware(), mac); ok {
		return m, i, ""
	}
	return inventory.Machine{}, nil, script.ReasonNoInterface
}

// MachineView turns an inventory entry into the script package's Machine.
func MachineView(m inventory.Machine, i *hardware.Hardware_Network_Interface, global script.Params) script.Machine {
	set := hw.BootSettings(m.Hardware())
	p, err := script.ParseParams(set.IPXEParams)
	if err != nil || set.IPXEParams == "" {
		p = global
	}
	nb := i.GetNetboot()
	mac, _ := net.ParseMAC(i.GetDhcp().GetMac())
	return script.Machine{
		HardwareID: m.ID, MAC: strings.ReplaceAll(mac.String(), ":", "-"), Arch: i.GetDhcp().GetArch(),
		WorkerToken: m.WorkerToken, AllowPXE: nb.GetAllowPxe(), AllowWorkflow: nb.GetAllowWorkflow(),
		IPXEURL: nb.GetIpxe().GetUrl(), IPXEContents: nb.GetIpxe().GetContents(),
		OSIEBaseURL: nb.GetOsie().GetBaseUrl(), Kernel: nb.GetOsie().GetKernel(), Initrd: nb.GetOsie().GetInitrd(),
		Params: p, Console: set.Console, KernelArgs: set.KernelArgs,
	}
}

// IdentifyScript finds the machine a script request is for: with
// requireIP only from the machine's own address (IdentifyOwn, as boot
// events), else also by the MAC it names (Identify).
func IdentifyScript(ms Machines, leases Leases, macStr string, ip netip.Addr, requireIP bool) (inventory.Machine, *hardware.Hardware_Network_Interface, string) {
	if requireIP {
		return IdentifyOwn(ms, leases, macStr, ip)
	}
	return Identify(ms, macStr, ip, false)
}

func (s *Server) machine(w http.ResponseWriter, r *http.Request) {
	m, i, why := IdentifyScript(s.machines, s.cfg.Leases, r.PathValue("mac"), remoteIP(r), s.cfg.RequireIP)
	if why != "" {
		s.renders.WithLabelValues("unknown", "").Inc()
		u := s.unknownCaller(r, "script", r.PathValue("mac"), why)
		if r.URL.Query().Has("iface") {
			// herd's auto.ipxe: it shows the answer on the console (iPXE
			// runs no body of a 404).
			writeScript(w, script.UnknownCaller(u))
			return
		}
		http.Error(w, "no hardware for this caller: "+script.UnknownHint(u), http.StatusNotFound)
		return
	}
	v := MachineView(m, i, s.cfg.Params)
	kind := script.Kind(v)
	s.renders.WithLabelValues(kind, string(v.Params)).Inc()
	s.events[eventScriptServed].Inc()
	s.log.Info("http: ipxe script served", "mac", v.MAC, "hardware_id", v.HardwareID, "script", kind, "ipxe_params", v.Params,
		"remote", r.RemoteAddr, "scheme", scheme(r))
	s.note(v.HardwareID, "ipxe script served ("+kind+")")
	writeScript(w, script.ForMachine(s.scriptConfig(r), v))
}

// herd_boots_events_total's label values besides script.Events.
const (
	eventScriptServed = "script_served" // boots served a machine's script
	eventOther        = "other"         // a request named an event not in script.Events
)

// allowedEvents answers a request naming another event.
var allowedEvents = "event: want one of " + strings.Join(script.Events, ", ")

// IdentifyOwn finds the machine whose own address ip is, for what only the
// machine itself may send (boot events): by ip when it is a reservation
// (a named MAC must then be that machine's, as Identify checks), else the
// named MAC's machine when leases (proxy mode; may be nil) saw that MAC
// ask for ip. Any other address gets ReasonNotItsAddress for a known MAC:
// a MAC alone, which anyone can name, identifies no one here.
func IdentifyOwn(ms Machines, leases Leases, macStr string, ip netip.Addr) (inventory.Machine, *hardware.Hardware_Network_Interface, string) {
	if _, ok := ms.ByIP(ip); ip.IsValid() && ok {
		return Identify(ms, macStr, ip, true)
	}
	m, i, why := Identify(ms, macStr, ip, false)
	if why != "" {
		return m, i, why
	}
	if mac, err := ParseMAC(macStr); err == nil && leases != nil && ip.IsValid() {
		if a, ok := leases.Address(mac); ok && a == ip {
			return m, i, ""
		}
	}
	return inventory.Machine{}, nil, script.ReasonNotItsAddress
}

// event records boot progress: logged with the machine's identity, counted
// and noted on the machine's workflow events. Only the events machine
// scripts send are taken, and only from the machine's own address
// (IdentifyOwn).
func (s *Server) event(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad event", http.StatusBadRequest)
		return
	}
	name := r.Form.Get("event")
	if !slices.Contains(script.Events, name) {
		s.events[eventOther].Inc()
		http.Error(w, allowedEvents, http.StatusBadRequest)
		return
	}
	m, i, why := IdentifyOwn(s.machines, s.cfg.Leases, r.Form.Get("mac"), remoteIP(r))
	if why != "" {
		s.unknownCaller(r, "event", r.Form.Get("mac"), why)
		http.Error(w, "no hardware for this caller", http.StatusNotFound)
		return
	}
	s.events[name].Inc()
	s.log.Info("boot event", "event", name, "mac", i.GetDhcp().GetMac(), "hardware_id", m.ID, "method", r.Method, "remote", r.RemoteAddr)
	s.note(m.ID, strings.ReplaceAll(name, "_", " "))
	writeScript(w, "#!ipxe\n")
}

func (s *Server) note(hwID, message string) {
	if s.cfg.Notes != nil && hwID != "" {
		s.cfg.Notes.Record(hwID, message)
	}
}

func (s *Server) binary(w http.ResponseWriter, r *http.Request) {
	f, _, err := s.cfg.Binaries.Open(r.PathValue("file"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	serveFile(w, r, f)
}
