package dhcp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/proto/hardware"
)

// Machines is the hardware boots' DHCP knows, by MAC (pkg/inventory).
type Machines interface {
	ByMAC(mac net.HardwareAddr) (inventory.Machine, bool)
}

// Config is the handler's fixed settings.
type Config struct {
	Mode Mode
	// ServerID is boots' address on the serving interface (option 54).
	ServerID net.IP
	Boot     BootConfig
	// UserClass is herd's iPXE user class, besides "iPXE".
	UserClass     string
	DefaultLease  time.Duration
	DefaultDomain string
	// Link is the serving network, for Route's checks of where a reply
	// may go.
	Link Link
	// Leases, when set, learns in proxy mode the address each known MAC
	// takes from the other DHCP server (its DHCPREQUEST's requested
	// address or ciaddr), so that the HTTP and syslog sides can tell the
	// machine's own address.
	Leases LeaseBook
	// Notes, when set, takes a note for the machine's workflow timeline
	// each time boots offers it a boot file.
	Notes Notes
}

// Notes takes notes on a machine's way to its OSIE (pkg/bootnotes); Record
// never blocks.
type Notes interface {
	Record(hwID, message string)
}

// LeaseBook takes the addresses proxy mode sees known machines take.
type LeaseBook interface {
	Learn(mac net.HardwareAddr, ip netip.Addr)
}

// Handler answers DHCP requests from the inventory.
type Handler struct {
	cfg      Config
	machines Machines
	log      *slog.Logger
	packets  *prometheus.CounterVec
	// counters caches packets' children by message type and outcome:
	// WithLabelValues hashes its labels on every call.
	counters [256][numOutcomes]atomic.Pointer[prometheus.Counter]
}

// NewHandler returns a Handler; reg may be nil.
func NewHandler(cfg Config, machines Machines, log *slog.Logger, reg prometheus.Registerer) *Handler {
	h := &Handler{cfg: cfg, machines: machines, log: log,
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_boots_dhcp_packets_total",
			Help: "DHCP requests by message type and outcome (the decision taken).",
		}, []string{"type", "outcome"})}
	if reg != nil {
		reg.MustRegister(h.packets)
	}
	return h
}

// Outcomes: the label values of herd_boots_dhcp_packets_total.
const (
	OutcomeUnknownMAC  = "unknown_mac"
	OutcomeNoBoot      = "no_boot_file"
	OutcomeBoot        = "boot_file"
	OutcomeLeaseOnly   = "lease_only"
	OutcomeIgnored     = "ignored"
	OutcomeNak         = "nak"
	OutcomeOtherServer = "other_server"
	OutcomeBadRecord   = "bad_record"
	// OutcomeBadAddress: the request's giaddr or ciaddr is no place for a
	// reply (Route): no answer.
	OutcomeBadAddress = "bad_address"
)

// outcome indexes outcomeNames (the counter cache's second key).
type outcome uint8

const (
	outUnknownMAC outcome = iota
	outNoBoot
	outBoot
	outLeaseOnly
	outIgnored
	outNak
	outOtherServer
	outBadRecord
	outBadAddress
	numOutcomes
)

var outcomeNames = [numOutcomes]string{OutcomeUnknownMAC, OutcomeNoBoot, OutcomeBoot, OutcomeLeaseOnly,
	OutcomeIgnored, OutcomeNak, OutcomeOtherServer, OutcomeBadRecord, OutcomeBadAddress}

func (h *Handler) count(mt dhcpv4.MessageType, o outcome) {
	slot := &h.counters[byte(mt)][o]
	c := slot.Load()
	if c == nil {
		cc := h.packets.WithLabelValues(mt.String(), outcomeNames[o])
		slot.Store(&cc) // a race stores the same child twice: harmless
		c = &cc
	}
	(*c).Inc()
}

// Prepared is what boots' DHCP reads from a hardware record, parsed once
// per record version by the inventory (Prepare is its derive function), so
// no request parses the record's strings again. It is kept compact (one
// per machine, 100,000 machines and more): addresses as arrays, the name
// and time servers packed in one slice.
type Prepared struct {
	ifaces []preparedIface
}

type preparedIface struct {
	mac       [6]byte
	allowPXE  bool
	hasGW     bool
	hasDomain bool // the hostname had dots: domain is the record's
	nDNS      uint8
	ip, mask  [4]byte
	gw        [4]byte
	servers   []byte // nDNS name servers then the time servers, 4 bytes each
	hostname  string
	domain    string
	duration  time.Duration
	leaseErr  error // the record reserves no usable address
}

// TimeServerNames gives the IPv4 addresses of a time server that hardware
// records name by host name (dhcp.time_servers: "0.pool.ntp.org"), from
// memory: herd-boots' resolver cache (package timeservers). It never waits
// for the network: a name it does not know yet answers nothing and is
// resolved in the background, after which the cache has the inventory
// derive the records naming it again (inventory.Rederive), so option 42
// gets the addresses without any lookup on the packet path.
type TimeServerNames interface {
	Addrs(name string) []netip.Addr
}

// Prepare is the inventory's derive function for herd-boots without time
// server names resolved (see Preparer): it returns a *Prepared.
func Prepare(h *hardware.Hardware) any { return prepare(h, nil) }

// Preparer is the inventory's derive function for herd-boots: Prepare
// with time servers given by host name taken from Names.
type Preparer struct {
	Names TimeServerNames
}

// Prepare returns a *Prepared of h (see inventory.New).
func (p Preparer) Prepare(h *hardware.Hardware) any { return prepare(h, p.Names) }

func prepare(h *hardware.Hardware, names TimeServerNames) *Prepared {
	p := &Prepared{}
	for _, i := range h.GetNetwork().GetInterfaces() {
		m, err := net.ParseMAC(i.GetDhcp().GetMac())
		if err != nil || len(m) != 6 {
			continue
		}
		pi := preparedIface{allowPXE: i.GetNetboot().GetAllowPxe()}
		copy(pi.mac[:], m)
		l, err := parseLease(i, names)
		if err != nil {
			pi.leaseErr = err
		} else {
			copy(pi.ip[:], l.IP)
			copy(pi.mask[:], l.Mask)
			pi.hasGW = copy(pi.gw[:], l.Gateway) == 4
			pi.nDNS = uint8(min(len(l.DNS), 63)) // 63 × 4 bytes fill one option
			for _, ip := range l.DNS[:pi.nDNS] {
				pi.servers = append(pi.servers, ip...)
			}
			for _, ip := range l.NTP[:min(len(l.NTP), 63)] {
				pi.servers = append(pi.servers, ip...)
			}
			pi.hostname, pi.domain, pi.hasDomain, pi.duration = l.Hostname, l.Domain, l.hasDomain, l.Duration
		}
		p.ifaces = append(p.ifaces, pi)
	}
	return p
}

// iface is the prepared interface whose MAC is mac (the first, as
// hw.Interface picks).
func (p *Prepared) iface(mac net.HardwareAddr) (*preparedIface, bool) {
	for k := range p.ifaces {
		if string(p.ifaces[k].mac[:]) == string(mac) {
			return &p.ifaces[k], true
		}
	}
	return nil, false
}

// lease fills l from the prepared record with boots' defaults applied,
// without allocating (every reply calls it): the server lists stay packed.
func (pi *preparedIface) lease(l *Lease, defaultLease time.Duration, defaultDomain string) {
	*l = Lease{IP: pi.ip[:], Mask: pi.mask[:], Hostname: pi.hostname, Domain: pi.domain, Duration: pi.duration}
	if pi.hasGW {
		l.Gateway = pi.gw[:]
	}
	nd := 4 * int(pi.nDNS)
	l.dns4, l.ntp4 = pi.servers[:nd:nd], pi.servers[nd:]
	if !pi.hasDomain {
		l.Domain = defaultDomain
	}
	if l.Duration <= 0 {
		l.Duration = defaultLease
	}
}

// Handle decides the reply to req (nil: stay silent) and where it goes.
// onPXEPort is true for requests received on port 4011. It parses the
// bytes AppendHandle writes; Serve sends those bytes directly.
func (h *Handler) Handle(req *dhcpv4.DHCPv4, peer *net.UDPAddr, onPXEPort bool) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	var p netip.AddrPort
	if peer != nil {
		p = peer.AddrPort()
	}
	b, dst := h.AppendHandle(nil, req, p, onPXEPort)
	if b == nil {
		return nil, nil
	}
	reply, err := dhcpv4.FromBytes(b)
	if err != nil {
		return nil, nil
	}
	return reply, net.UDPAddrFromAddrPort(dst)
}

// AppendHandle appends the wire bytes of the reply to req to dst and says
// where they go (Route); it returns nil when boots stays silent. peer is
// where req came from.
func (h *Handler) AppendHandle(dst []byte, req *dhcpv4.DHCPv4, peer netip.AddrPort, onPXEPort bool) ([]byte, netip.AddrPort) {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	out, mt, o := h.decide(dst, req, peer, onPXEPort)
	h.count(msgType(req), o)
	if out == nil {
		return nil, netip.AddrPort{}
	}
	to, _ := Route(req, peer, onPXEPort, mt == dhcpv4.MessageTypeNak, h.cfg.Link)
	return out, to
}

func (h *Handler) decide(dst []byte, req *dhcpv4.DHCPv4, peer netip.AddrPort, onPXEPort bool) ([]byte, dhcpv4.MessageType, outcome) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil, 0, outIgnored
	}
	var mt dhcpv4.MessageType
	reqType := msgType(req)
	switch reqType {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		mt = dhcpv4.MessageTypeAck
	default: // RELEASE, DECLINE, replies from other servers, BOOTP
		return nil, 0, outIgnored
	}
	// Where the reply would go is checked before anything else: a request
	// whose giaddr or ciaddr no reply may go to is not answered at all
	// (whether a NAK would go elsewhere does not matter).
	if _, bad := Route(req, peer, onPXEPort, false, h.cfg.Link); bad.Why != "" {
		if h.log.Enabled(context.Background(), slog.LevelDebug) {
			h.log.Debug("dhcp: the request's addresses allow no reply: no answer", "mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(),
				"type", reqType.String(), "giaddr", req.GatewayIPAddr.String(), "ciaddr", req.ClientIPAddr.String(), "from", peer.String(),
				"refused", bad.String())
		}
		return nil, 0, outBadAddress
	}
	if h.cfg.Mode == Proxy && reqType == dhcpv4.MessageTypeRequest && h.cfg.Leases != nil {
		h.learn(req)
	}
	mac := req.ClientHWAddr
	c := Classify(req, h.cfg.UserClass)

	if h.cfg.Mode == Proxy {
		// proxyDHCP answers DISCOVERs on 67 and REQUESTs on 4011 only:
		// a REQUEST on 67 belongs to the server handing out addresses.
		if !c.Netboot() || (mt == dhcpv4.MessageTypeAck && !onPXEPort) {
			return nil, 0, outIgnored
		}
	}
	m, ok := h.machines.ByMAC(mac)
	if !ok {
		if h.log.Enabled(context.Background(), slog.LevelDebug) {
			h.log.Debug("unknown MAC: no answer", "mac", mac.String(), "xid", req.TransactionID.String(), "type", reqType.String())
		}
		return nil, 0, outUnknownMAC
	}
	p, _ := m.Derived.(*Prepared)
	if p == nil { // an inventory without boots' derive function
		p = prepare(m.Hardware(), nil)
	}
	iface, ok := p.iface(mac)
	if !ok {
		return nil, 0, outUnknownMAC
	}
	boot := Decide(c, iface.allowPXE, h.cfg.Boot)

	var lease *Lease
	if h.cfg.Mode == Reservation {
		if iface.leaseErr != nil {
			h.log.Warn("hardware record cannot be leased", "mac", mac.String(), "hardware_id", m.ID, "err", iface.leaseErr)
			return nil, 0, outBadRecord
		}
		var l Lease
		iface.lease(&l, h.cfg.DefaultLease, h.cfg.DefaultDomain)
		lease = &l
		if reqType == dhcpv4.MessageTypeRequest {
			if sid := optIP(req, dhcpv4.OptionServerIdentifier); sid != nil && !sid.Equal(h.cfg.ServerID) {
				return nil, 0, outOtherServer // the client chose another server's offer
			}
			want := optIP(req, dhcpv4.OptionRequestedIPAddress)
			if want == nil || want.IsUnspecified() {
				want = req.ClientIPAddr
			}
			if want != nil && !want.IsUnspecified() && !want.Equal(l.IP) {
				h.log.Info("client asks for an address not reserved for it: NAK", "mac", mac.String(), "hardware_id", m.ID,
					"xid", req.TransactionID.String(), "requested", want.String(), "reserved", l.IP.String())
				return AppendReply(dst, req, dhcpv4.MessageTypeNak, h.cfg.ServerID, nil, Boot{}, c), dhcpv4.MessageTypeNak, outNak
			}
		}
	} else if boot.File == "" {
		return nil, 0, outNoBoot // proxyDHCP has nothing to say
	}
	out := AppendReply(dst, req, mt, h.cfg.ServerID, lease, boot, c)
	o := outBoot
	switch {
	case boot.File == "" && lease != nil:
		o = outLeaseOnly
	case boot.File == "":
		o = outNoBoot
	}
	// A reply with a boot file (a machine netbooting: rare, and what an
	// operator and the sandbox follow) is logged at info; lease-only
	// replies, the bulk under load, at debug only. The counters keep the
	// totals either way.
	level := slog.LevelInfo
	if boot.File == "" {
		level = slog.LevelDebug
	}
	if h.cfg.Notes != nil && boot.File != "" && mt == dhcpv4.MessageTypeOffer {
		// One note per netboot DORA, on its offer: the ACK repeats it.
		h.cfg.Notes.Record(m.ID, offerNote(lease, boot))
	}
	if h.log.Enabled(context.Background(), level) {
		ip := net.IPv4zero
		if lease != nil && (mt != dhcpv4.MessageTypeAck || reqType != dhcpv4.MessageTypeInform) {
			ip = lease.IP
		}
		h.log.Log(context.Background(), level, "dhcp reply", "mac", mac.String(), "hardware_id", m.ID, "xid", req.TransactionID.String(),
			"type", reqType.String(), "reply", mt.String(), "ip", ip.String(), "boot_file", boot.File, "decision", boot.Reason)
	}
	return out, mt, o
}

// offerNote is the timeline's note of an offer with a boot file: the
// address (none in proxy mode: the other server leases) and what boots
// told the client to load.
func offerNote(lease *Lease, boot Boot) string {
	if lease == nil {
		return "dhcp offer (proxy): " + boot.Reason
	}
	return "dhcp offer " + lease.IP.String() + ": " + boot.Reason
}

// learn notes the address a known MAC asks the other server for (proxy
// mode): option 50 in SELECTING and INIT-REBOOT, else ciaddr (RFC 2131
// 4.3.2). It is what the machine will most likely send from; an address
// no reply could go to is never learned.
func (h *Handler) learn(req *dhcpv4.DHCPv4) {
	ip, ok := field4(optIP(req, dhcpv4.OptionRequestedIPAddress))
	if !ok {
		ip, ok = field4(req.ClientIPAddr)
	}
	if !ok || unusable(ip, h.cfg.Link) != "" {
		return
	}
	if _, known := h.machines.ByMAC(req.ClientHWAddr); known {
		h.cfg.Leases.Learn(req.ClientHWAddr, ip)
	}
}

// msgType is req.MessageType() without its decoder's allocations.
func msgType(req *dhcpv4.DHCPv4) dhcpv4.MessageType {
	if v := req.Options[dhcpv4.OptionDHCPMessageType.Code()]; len(v) == 1 {
		return dhcpv4.MessageType(v[0])
	}
	return dhcpv4.MessageTypeNone
}

// optIP is an IPv4 address option as sent (nil: absent or not 4 bytes,
// as dhcpv4.GetIP reads it), without a copy.
func optIP(req *dhcpv4.DHCPv4, o dhcpv4.OptionCode) net.IP {
	if v := req.Options[o.Code()]; len(v) == net.IPv4len {
		return net.IP(v)
	}
	return nil
}
