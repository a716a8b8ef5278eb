// Package ec2 turns a hardware record into the answers herd-metadata gives
// the machine: the EC2-style meta-data tree (built from one table of
// fields), its user-data and the whole instance metadata document. All of
// it is computed once per record change (Tree.Prepare), so serving a
// request is a map lookup and a write of ready bytes. The paths, labels
// and listings are one table every machine shares; a machine holds only
// its values, in one buffer.
package ec2

import (
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/herd-metal/herd/proto/hardware"
)

// Instance is what the meta-data tree is made of: the values of one
// machine, read from its metadata document (Tinkerbell's Equinix-style
// layout) with the hardware record's own fields as fallbacks.
type Instance struct {
	ID, Hostname                string
	LocalIPv4                   string
	PublicIPv4, PublicIPv6      string
	SSHKeys, Tags               []string
	Facility, Plan              string
	OSSlug, OSDistro, OSVersion string
	UserData                    string
}

// address is one entry of instance.ip_addresses.
type address struct {
	ip         netip.Addr
	public     bool
	management bool
}

// FromHardware reads hw's metadata document. Where the document says
// nothing, the record answers: its id for the instance id, the first
// interface's DHCP hostname and IPv4 address. A document that is not a
// JSON object yields only those fallbacks; a field of the wrong type is
// treated as absent (the server validated the record; the service must
// answer whatever it holds).
func FromHardware(hw *hardware.Hardware) *Instance {
	in, _ := parse(hw)
	return in
}

// parse reads hw's metadata document once: the Instance and the
// document's addresses (see FromHardware and Addresses).
func parse(hw *hardware.Hardware) (*Instance, []netip.Addr) {
	doc := object(parseDocument(hw.GetMetadata()))
	inst := object(doc["instance"])
	facility := object(doc["facility"])
	os := object(inst["operating_system"])
	if os == nil { // Packet's older spelling
		os = object(inst["operating_system_version"])
	}
	in := &Instance{
		ID:        first(str(inst["id"]), hw.GetId()),
		Hostname:  str(inst["hostname"]),
		SSHKeys:   strs(inst["ssh_keys"]),
		Tags:      strs(inst["tags"]),
		Facility:  first(str(facility["facility_code"]), str(inst["facility"])),
		Plan:      first(str(facility["plan_slug"]), str(doc["plan_slug"]), str(inst["plan"])),
		OSSlug:    first(str(os["slug"]), str(os["os_slug"])),
		OSDistro:  str(os["distro"]),
		OSVersion: str(os["version"]),
		UserData:  first(str(inst["userdata"]), str(doc["userdata"])),
	}
	addrs := addresses(inst)
	var ips []netip.Addr
	if len(addrs) > 0 {
		ips = make([]netip.Addr, 0, len(addrs))
	}
	for _, a := range addrs {
		ips = append(ips, a.ip)
		switch {
		case a.ip.Is4() && !a.public && in.LocalIPv4 == "":
			in.LocalIPv4 = a.ip.String()
		case a.ip.Is4() && a.public && in.PublicIPv4 == "":
			in.PublicIPv4 = a.ip.String()
		case a.ip.Is6() && a.public && in.PublicIPv6 == "":
			in.PublicIPv6 = a.ip.String()
		}
	}
	for _, ifc := range hw.GetNetwork().GetInterfaces() {
		d := ifc.GetDhcp()
		if in.Hostname == "" {
			in.Hostname = d.GetHostname()
		}
		if ip, err := netip.ParseAddr(d.GetIp().GetAddress()); err == nil && ip.Unmap().Is4() && in.LocalIPv4 == "" {
			in.LocalIPv4 = ip.Unmap().String()
		}
	}
	return in, ips
}

// Addresses is every IP the metadata document gives the machine
// (instance.ip_addresses, and instance.network.addresses as older hegel
// read it), so a machine is also known by them.
func Addresses(hw *hardware.Hardware) []netip.Addr {
	_, addrs := parse(hw)
	return addrs
}

func addresses(inst map[string]any) []address {
	list, _ := inst["ip_addresses"].([]any)
	if list == nil {
		list, _ = object(inst["network"])["addresses"].([]any)
	}
	var out []address
	for _, v := range list {
		o := object(v)
		ip, err := netip.ParseAddr(str(o["address"]))
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		// address_family, when given, must agree with the address.
		if f, ok := o["address_family"].(float64); ok && ((f == 4) != ip.Is4()) {
			continue
		}
		pub, _ := o["public"].(bool)
		mgmt, _ := o["management"].(bool)
		out = append(out, address{ip: ip, public: pub, management: mgmt})
	}
	// Management addresses first: they are the ones EC2 clients expect as
	// "the" address of each kind.
	sorted := make([]address, 0, len(out))
	for _, a := range out {
		if a.management {
			sorted = append(sorted, a)
		}
	}
	for _, a := range out {
		if !a.management {
			sorted = append(sorted, a)
		}
	}
	return sorted
}

func parseDocument(s string) any {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil
	}
	return v
}

func object(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func strs(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		if s, ok := e.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
