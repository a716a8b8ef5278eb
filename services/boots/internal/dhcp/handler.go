package dhcp

import (
	"log/slog"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/services/boots/internal/hw"
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
}

// Handler answers DHCP requests from the inventory.
type Handler struct {
	cfg      Config
	machines Machines
	log      *slog.Logger
	packets  *prometheus.CounterVec
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
)

// Handle decides the reply to req (nil: stay silent) and where it goes.
// onPXEPort is true for requests received on port 4011.
func (h *Handler) Handle(req *dhcpv4.DHCPv4, peer *net.UDPAddr, onPXEPort bool) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	reply, outcome := h.decide(req, onPXEPort)
	h.packets.WithLabelValues(req.MessageType().String(), outcome).Inc()
	if reply == nil {
		return nil, nil
	}
	return reply, Destination(req, reply, peer, onPXEPort)
}

func (h *Handler) decide(req *dhcpv4.DHCPv4, onPXEPort bool) (*dhcpv4.DHCPv4, string) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil, OutcomeIgnored
	}
	var mt dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		mt = dhcpv4.MessageTypeAck
	default: // RELEASE, DECLINE, replies from other servers, BOOTP
		return nil, OutcomeIgnored
	}
	mac := req.ClientHWAddr
	log := h.log.With("mac", mac.String(), "xid", req.TransactionID.String(), "type", req.MessageType().String())
	c := Classify(req, h.cfg.UserClass)

	if h.cfg.Mode == Proxy {
		// proxyDHCP answers DISCOVERs on 67 and REQUESTs on 4011 only:
		// a REQUEST on 67 belongs to the server handing out addresses.
		if !c.Netboot() || (mt == dhcpv4.MessageTypeAck && !onPXEPort) {
			return nil, OutcomeIgnored
		}
	}
	m, ok := h.machines.ByMAC(mac)
	if !ok {
		log.Debug("unknown MAC: no answer")
		return nil, OutcomeUnknownMAC
	}
	log = log.With("hardware_id", m.Hardware.GetId())
	iface, ok := hw.Interface(m.Hardware, mac)
	if !ok {
		return nil, OutcomeUnknownMAC
	}
	boot := Decide(c, hw.AllowPXE(iface), h.cfg.Boot)

	var lease *Lease
	if h.cfg.Mode == Reservation {
		l, err := LeaseFrom(iface, h.cfg.DefaultLease, h.cfg.DefaultDomain)
		if err != nil {
			log.Warn("hardware record cannot be leased", "err", err)
			return nil, OutcomeBadRecord
		}
		lease = &l
		if mt == dhcpv4.MessageTypeAck && req.MessageType() == dhcpv4.MessageTypeRequest {
			if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(h.cfg.ServerID) {
				return nil, OutcomeOtherServer // the client chose another server's offer
			}
			want := req.RequestedIPAddress()
			if want == nil || want.IsUnspecified() {
				want = req.ClientIPAddr
			}
			if want != nil && !want.IsUnspecified() && !want.Equal(l.IP) {
				log.Info("client asks for an address not reserved for it: NAK", "requested", want.String(), "reserved", l.IP.String())
				r, err := Reply(req, dhcpv4.MessageTypeNak, h.cfg.ServerID, nil, Boot{}, c)
				if err != nil {
					return nil, OutcomeIgnored
				}
				return r, OutcomeNak
			}
		}
	} else if boot.File == "" {
		return nil, OutcomeNoBoot // proxyDHCP has nothing to say
	}
	r, err := Reply(req, mt, h.cfg.ServerID, lease, boot, c)
	if err != nil {
		log.Error("building reply", "err", err)
		return nil, OutcomeIgnored
	}
	outcome := OutcomeBoot
	switch {
	case boot.File == "" && lease != nil:
		outcome = OutcomeLeaseOnly
	case boot.File == "":
		outcome = OutcomeNoBoot
	}
	log.Info("dhcp reply", "reply", mt.String(), "ip", r.YourIPAddr.String(), "boot_file", boot.File, "decision", boot.Reason)
	return r, outcome
}
