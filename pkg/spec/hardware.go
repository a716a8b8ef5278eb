package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/herd-metal/herd/proto/hardware"
)

// MaxHardwareBytes is the largest hardware document accepted, metadata
// included.
const MaxHardwareBytes = 1 << 20

// maxLeaseTime is DHCP's largest lease (option 51 is 32 bits, all ones
// meaning infinite).
const maxLeaseTime = math.MaxUint32

// Field names of the hardware JSON, in the order MarshalHardware writes them.
var (
	hardwareKeys  = []string{"id", "version", "metadata", "network", "bmc"}
	networkKeys   = []string{"interfaces"}
	interfaceKeys = []string{"dhcp", "netboot"}
	dhcpKeys      = []string{"mac", "ip", "hostname", "lease_time", "name_servers", "time_servers", "arch", "uefi", "iface_name"}
	ipKeys        = []string{"address", "netmask", "gateway", "family"}
	netbootKeys   = []string{"allow_pxe", "allow_workflow", "ipxe", "osie"}
	ipxeKeys      = []string{"url", "contents"}
	osieKeys      = []string{"base_url", "kernel", "initrd"}
)

// ParseHardware reads a hardware record in the JSON of Tinkerbell v0.6's
// `tink hardware push` files and validates it. metadata may be a JSON object
// (as in those files) or a string holding one; it is kept as compact JSON
// text with the operator's key order. "version" (as `tink hardware get`
// prints it) is accepted; the server sets its own. Unknown and repeated keys
// are errors, and so is a document over MaxHardwareBytes.
// The record is returned as written: NormalizeHardware gives the stored
// spelling of its addresses.
func ParseHardware(b []byte) (*hardware.Hardware, error) {
	if len(b) > MaxHardwareBytes {
		return nil, &FieldError{Field: "hardware", Problem: fmt.Sprintf("is %d bytes; the limit is %d (1 MiB)", len(b), MaxHardwareBytes)}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, &FieldError{Field: "hardware", Problem: "is empty"}
	}
	tree, err := decodeJSON(b, "hardware", "")
	if err != nil {
		return nil, err
	}
	r := &jsonReader{}
	hw := r.hardware(tree)
	if !r.p.empty() {
		return nil, r.p.err("hardware")
	}
	if err := ValidateHardware(hw); err != nil {
		return nil, err
	}
	return hw, nil
}

// jsonReader maps the decoded JSON tree onto the proto, recording type
// errors and unknown keys with their paths.
type jsonReader struct{ p problems }

// object returns v as an object whose keys are all known; nil when v is
// null (an absent section) or not an object. path "" is the document.
func (r *jsonReader) object(path string, v any, known []string) *jsonObject {
	if v == nil {
		return nil
	}
	o, ok := v.(*jsonObject)
	if !ok {
		name := path
		if name == "" {
			name = "hardware"
		}
		r.p.add(name, "must be an object, not %s", kindOf(v))
		return nil
	}
	for _, k := range o.keys {
		if !slices.Contains(known, k) {
			r.p.add(child(path, k), "%s", suggest(k, known))
		}
	}
	return o
}

func (r *jsonReader) str(path string, o *jsonObject, key string) string {
	v := o.vals[key]
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	}
	r.p.add(child(path, key), "must be a string, not %s", kindOf(v))
	return ""
}

func (r *jsonReader) integer(path string, o *jsonObject, key string) int64 {
	v := o.vals[key]
	switch t := v.(type) {
	case nil:
		return 0
	case json.Number:
		n, err := t.Int64()
		if err != nil {
			r.p.add(child(path, key), "%s is not a whole number in range", t)
		}
		return n
	}
	r.p.add(child(path, key), "must be a number, not %s", kindOf(v))
	return 0
}

func (r *jsonReader) boolean(path string, o *jsonObject, key string) bool {
	v := o.vals[key]
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	}
	r.p.add(child(path, key), "must be true or false, not %s", kindOf(v))
	return false
}

func (r *jsonReader) strings(path string, o *jsonObject, key string) []string {
	v := o.vals[key]
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		r.p.add(child(path, key), "must be a list of strings, not %s", kindOf(v))
		return nil
	}
	var out []string
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			r.p.add(index(child(path, key), i), "must be a string, not %s", kindOf(e))
			continue
		}
		out = append(out, s)
	}
	return out
}

func (r *jsonReader) hardware(v any) *hardware.Hardware {
	o := r.object("", v, hardwareKeys)
	if o == nil {
		if v == nil {
			r.p.add("hardware", "is null; expected an object")
		}
		return nil
	}
	hw := &hardware.Hardware{
		Id:       r.str("", o, "id"),
		Version:  r.integer("", o, "version"),
		Metadata: r.metadata(o.vals["metadata"]),
		Bmc:      r.bmc(o.vals["bmc"]),
	}
	if n := r.object("network", o.vals["network"], networkKeys); n != nil {
		hw.Network = &hardware.Hardware_Network{}
		switch list := n.vals["interfaces"].(type) {
		case nil:
		case []any:
			for i, e := range list {
				hw.Network.Interfaces = append(hw.Network.Interfaces, r.iface(index("network.interfaces", i), e))
			}
		default:
			r.p.add("network.interfaces", "must be a list, not %s", kindOf(list))
		}
	}
	return hw
}

// metadata accepts an object, or a string holding one (the proto's form),
// and returns compact JSON text.
func (r *jsonReader) metadata(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		if t == "" {
			return ""
		}
		inner, err := decodeJSON([]byte(t), "metadata", "metadata")
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				r.p.add(fe.Field, "%s", fe.Problem)
			}
			return ""
		}
		v = inner
	}
	if _, ok := v.(*jsonObject); !ok {
		r.p.add("metadata", "must be a JSON object, not %s", kindOf(v))
		return ""
	}
	var buf bytes.Buffer
	writeJSON(&buf, v)
	return buf.String()
}

func (r *jsonReader) iface(path string, v any) *hardware.Hardware_Network_Interface {
	o := r.object(path, v, interfaceKeys)
	if o == nil {
		if v == nil {
			r.p.add(path, "is null; expected an interface object")
		}
		return nil
	}
	in := &hardware.Hardware_Network_Interface{}
	if d := r.object(path+".dhcp", o.vals["dhcp"], dhcpKeys); d != nil {
		p := path + ".dhcp"
		in.Dhcp = &hardware.Hardware_DHCP{
			Mac:         r.str(p, d, "mac"),
			Hostname:    r.str(p, d, "hostname"),
			LeaseTime:   r.integer(p, d, "lease_time"),
			NameServers: r.strings(p, d, "name_servers"),
			TimeServers: r.strings(p, d, "time_servers"),
			Arch:        r.str(p, d, "arch"),
			Uefi:        r.boolean(p, d, "uefi"),
			IfaceName:   r.str(p, d, "iface_name"),
		}
		if ip := r.object(p+".ip", d.vals["ip"], ipKeys); ip != nil {
			in.Dhcp.Ip = &hardware.Hardware_DHCP_IP{
				Address: r.str(p+".ip", ip, "address"),
				Netmask: r.str(p+".ip", ip, "netmask"),
				Gateway: r.str(p+".ip", ip, "gateway"),
				Family:  r.integer(p+".ip", ip, "family"),
			}
		}
	}
	if n := r.object(path+".netboot", o.vals["netboot"], netbootKeys); n != nil {
		p := path + ".netboot"
		in.Netboot = &hardware.Hardware_Netboot{
			AllowPxe:      r.boolean(p, n, "allow_pxe"),
			AllowWorkflow: r.boolean(p, n, "allow_workflow"),
		}
		if x := r.object(p+".ipxe", n.vals["ipxe"], ipxeKeys); x != nil {
			in.Netboot.Ipxe = &hardware.Hardware_Netboot_IPXE{
				Url:      r.str(p+".ipxe", x, "url"),
				Contents: r.str(p+".ipxe", x, "contents"),
			}
		}
		if x := r.object(p+".osie", n.vals["osie"], osieKeys); x != nil {
			in.Netboot.Osie = &hardware.Hardware_Netboot_Osie{
				BaseUrl: r.str(p+".osie", x, "base_url"),
				Kernel:  r.str(p+".osie", x, "kernel"),
				Initrd:  r.str(p+".osie", x, "initrd"),
			}
		}
	}
	return in
}

// ValidateHardware checks a record as it arrives from a file or from a
// Push call: the id is a UUID, there is at least one interface, each with a
// valid unicast MAC that no other interface of the record repeats, valid
// and consistent addressing, an RFC 1123 hostname, a lease time DHCP can
// carry, name server addresses, time servers as addresses or RFC 1123 host
// names (as Tinkerbell v0.6 took them; herd-boots resolves the names for
// DHCP option 42), http(s) boot URLs, and metadata that is a JSON
// object. It reports every problem found (up to a bound), each naming its
// field.
func ValidateHardware(hw *hardware.Hardware) error {
	var p problems
	if hw == nil {
		p.add("hardware", "is missing")
		return p.err("hardware")
	}
	switch {
	case hw.GetId() == "":
		p.add("id", "is required: a UUID naming the machine (uuidgen makes one)")
	default:
		if msg := uuidProblem(hw.GetId()); msg != "" {
			p.add("id", "%s", msg)
		}
	}
	if hw.GetVersion() < 0 {
		p.add("version", "%d is negative", hw.GetVersion())
	}
	if m := hw.GetMetadata(); m != "" {
		tree, err := decodeJSON([]byte(m), "metadata", "metadata")
		switch {
		case err != nil:
			var fe *FieldError
			if errors.As(err, &fe) {
				p.add(fe.Field, "%s", fe.Problem)
			}
		default:
			if _, ok := tree.(*jsonObject); !ok {
				p.add("metadata", "must be a JSON object, not %s", kindOf(tree))
			}
		}
	}
	ifaces := hw.GetNetwork().GetInterfaces()
	switch {
	case hw.GetNetwork() == nil:
		p.add("network", "is required: it lists the machine's interfaces")
	case len(ifaces) == 0:
		p.add("network.interfaces", "needs at least one interface")
	}
	macs := map[string]string{} // normalized MAC -> path of its first use
	ips := map[netip.Addr]string{}
	for i, in := range ifaces {
		validateInterface(&p, index("network.interfaces", i), in, macs, ips)
	}
	validateBMC(&p, hw.GetBmc())
	return p.err("hardware")
}

func validateInterface(p *problems, path string, in *hardware.Hardware_Network_Interface, macs map[string]string, ips map[netip.Addr]string) {
	if in == nil {
		p.add(path, "is empty")
		return
	}
	d := in.GetDhcp()
	if d == nil {
		p.add(path+".dhcp", "is required: it holds the interface's mac")
	} else {
		validateDHCP(p, path+".dhcp", d, macs, ips)
	}
	if n := in.GetNetboot(); n != nil {
		validateNetboot(p, path+".netboot", n)
	}
}

func validateDHCP(p *problems, path string, d *hardware.Hardware_DHCP, macs map[string]string, ips map[netip.Addr]string) {
	switch {
	case d.GetMac() == "":
		p.add(path+".mac", "is required")
	default:
		if msg := macProblem(d.GetMac()); msg != "" {
			p.add(path+".mac", "%s", msg)
			break
		}
		m, _ := NormalizeMAC(d.GetMac())
		if first, dup := macs[m]; dup {
			p.add(path+".mac", "%s is already the MAC of %s", quote(d.GetMac()), strings.TrimSuffix(first, ".dhcp.mac"))
		} else {
			macs[m] = path + ".mac"
		}
	}
	if ip := d.GetIp(); ip != nil {
		validateIP(p, path+".ip", ip, ips)
	}
	if h := d.GetHostname(); h != "" {
		if msg := hostnameProblem(h); msg != "" {
			p.add(path+".hostname", "%s", msg)
		}
	}
	switch lt := d.GetLeaseTime(); {
	case lt < 0:
		p.add(path+".lease_time", "%d is negative; give seconds, or 0 for the server default", lt)
	case lt > maxLeaseTime:
		p.add(path+".lease_time", "%d seconds does not fit DHCP's 32-bit lease time (at most %d)", lt, uint32(maxLeaseTime))
	}
	for j, s := range d.GetNameServers() {
		if _, msg := hostIPProblem(s); msg != "" {
			p.add(index(path+".name_servers", j), "%s", msg)
		}
	}
	for j, s := range d.GetTimeServers() {
		if msg := hostProblem(s); msg != "" {
			p.add(index(path+".time_servers", j), "%s", msg)
		}
	}
	if a := d.GetArch(); a != "" {
		if msg := archProblem(a); msg != "" {
			p.add(path+".arch", "%s", msg)
		}
	}
	if n := d.GetIfaceName(); n != "" {
		if msg := ifaceNameProblem(n); msg != "" {
			p.add(path+".iface_name", "%s", msg)
		}
	}
}

func validateIP(p *problems, path string, ip *hardware.Hardware_DHCP_IP, ips map[netip.Addr]string) {
	fam := ip.GetFamily()
	if fam != 0 && fam != 4 && fam != 6 {
		p.add(path+".family", "%d is not 4 or 6", fam)
		fam = 0
	}
	if ip.GetAddress() == "" {
		if ip.GetNetmask() != "" || ip.GetGateway() != "" {
			p.add(path+".address", "is required when netmask or gateway is set")
		}
		return
	}
	addr, msg := hostIPProblem(ip.GetAddress())
	if msg != "" {
		p.add(path+".address", "%s", msg)
		return
	}
	v4 := addr.Is4()
	if first, dup := ips[addr]; dup {
		p.add(path+".address", "%s is already the address of %s", addr, strings.TrimSuffix(first, ".dhcp.ip.address"))
	} else {
		ips[addr] = path + ".address"
	}
	switch {
	case fam == 4 && !v4:
		p.add(path+".family", "is 4 but address %s is IPv6", addr)
	case fam == 6 && v4:
		p.add(path+".family", "is 6 but address %s is IPv4", addr)
	}
	if m := ip.GetNetmask(); m != "" {
		bits, msg := maskBits(m, v4)
		switch {
		case msg != "":
			p.add(path+".netmask", "%s", msg)
		default:
			if msg := subnetProblem(addr, bits); msg != "" {
				p.add(path+".address", "%s", msg)
			}
		}
	}
	if g := ip.GetGateway(); g != "" {
		gw, msg := hostIPProblem(g)
		switch {
		case msg != "":
			p.add(path+".gateway", "%s", msg)
		case gw.Is4() != v4:
			p.add(path+".gateway", "%s is not in the same family (IPv4/IPv6) as address %s", gw, addr)
		case gw == addr:
			p.add(path+".gateway", "%s is the machine's own address", gw)
		}
	}
}

func validateNetboot(p *problems, path string, n *hardware.Hardware_Netboot) {
	if x := n.GetIpxe(); x != nil {
		if x.GetUrl() != "" && x.GetContents() != "" {
			p.add(path+".ipxe", "set url or contents, not both")
		}
		if u := x.GetUrl(); u != "" {
			if msg := httpURLProblem(u); msg != "" {
				p.add(path+".ipxe.url", "%s", msg)
			}
		}
		if c := x.GetContents(); c != "" && !strings.HasPrefix(c, "#!ipxe") && !strings.HasPrefix(c, "#!gpxe") {
			p.add(path+".ipxe.contents", "must start with \"#!ipxe\", or iPXE will not run it as a script")
		}
	}
	if o := n.GetOsie(); o != nil {
		if u := o.GetBaseUrl(); u != "" {
			if msg := httpURLProblem(u); msg != "" {
				p.add(path+".osie.base_url", "%s", msg)
			}
		}
		if k := o.GetKernel(); k != "" {
			if msg := bootPathProblem(k); msg != "" {
				p.add(path+".osie.kernel", "%s", msg)
			}
		}
		if k := o.GetInitrd(); k != "" {
			if msg := bootPathProblem(k); msg != "" {
				p.add(path+".osie.initrd", "%s", msg)
			}
		}
	}
}

// NormalizeHardware rewrites a record's identifiers in the one spelling
// herd stores and looks up: the id and MACs in lower case (MACs colon
// separated), IP addresses in their canonical text form. Time servers
// given by host name are kept as written. Values that do not parse are
// left alone for ValidateHardware to report.
func NormalizeHardware(hw *hardware.Hardware) {
	if hw == nil {
		return
	}
	if uuidProblem(hw.Id) == "" {
		hw.Id = strings.ToLower(hw.Id)
	}
	if b := hw.Bmc; b != nil {
		b.Address = canonicalIP(b.Address)
	}
	for _, in := range hw.GetNetwork().GetInterfaces() {
		d := in.GetDhcp()
		if d == nil {
			continue
		}
		if m, err := NormalizeMAC(d.Mac); err == nil {
			d.Mac = m
		}
		if ip := d.Ip; ip != nil {
			ip.Address = canonicalIP(ip.Address)
			ip.Netmask = canonicalIP(ip.Netmask)
			ip.Gateway = canonicalIP(ip.Gateway)
		}
		for j := range d.NameServers {
			d.NameServers[j] = canonicalIP(d.NameServers[j])
		}
		for j := range d.TimeServers {
			d.TimeServers[j] = canonicalIP(d.TimeServers[j])
		}
	}
}

func canonicalIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	return a.String()
}

// HardwareAddresses returns the record's interface MACs and IP addresses
// (not gateways or servers), normalized, each once, in interface order.
func HardwareAddresses(hw *hardware.Hardware) (macs, ips []string) {
	seen := map[string]bool{}
	for _, in := range hw.GetNetwork().GetInterfaces() {
		d := in.GetDhcp()
		if m := d.GetMac(); m != "" {
			if n, err := NormalizeMAC(m); err == nil {
				m = n
			} else {
				m = strings.ToLower(m)
			}
			if !seen[m] {
				seen[m] = true
				macs = append(macs, m)
			}
		}
		if a := d.GetIp().GetAddress(); a != "" {
			a = canonicalIP(a)
			if !seen[a] {
				seen[a] = true
				ips = append(ips, a)
			}
		}
	}
	return macs, ips
}

// The file shapes MarshalHardware writes; field order is Tinkerbell's.
type (
	hwFile struct {
		ID       string          `json:"id"`
		Version  int64           `json:"version,omitempty"`
		Metadata json.RawMessage `json:"metadata,omitempty"`
		Network  *networkFile    `json:"network,omitempty"`
		BMC      *bmcFile        `json:"bmc,omitempty"`
	}
	networkFile struct {
		Interfaces []*interfaceFile `json:"interfaces"`
	}
	interfaceFile struct {
		DHCP    *dhcpFile    `json:"dhcp,omitempty"`
		Netboot *netbootFile `json:"netboot,omitempty"`
	}
	dhcpFile struct {
		MAC         string   `json:"mac"`
		IP          *ipFile  `json:"ip,omitempty"`
		Hostname    string   `json:"hostname,omitempty"`
		LeaseTime   int64    `json:"lease_time,omitempty"`
		NameServers []string `json:"name_servers,omitempty"`
		TimeServers []string `json:"time_servers,omitempty"`
		Arch        string   `json:"arch,omitempty"`
		UEFI        bool     `json:"uefi"`
		IfaceName   string   `json:"iface_name,omitempty"`
	}
	ipFile struct {
		Address string `json:"address,omitempty"`
		Netmask string `json:"netmask,omitempty"`
		Gateway string `json:"gateway,omitempty"`
		Family  int64  `json:"family,omitempty"`
	}
	netbootFile struct {
		AllowPXE      bool      `json:"allow_pxe"`
		AllowWorkflow bool      `json:"allow_workflow"`
		IPXE          *ipxeFile `json:"ipxe,omitempty"`
		Osie          *osieFile `json:"osie,omitempty"`
	}
	ipxeFile struct {
		URL      string `json:"url,omitempty"`
		Contents string `json:"contents,omitempty"`
	}
	osieFile struct {
		BaseURL string `json:"base_url,omitempty"`
		Kernel  string `json:"kernel,omitempty"`
		Initrd  string `json:"initrd,omitempty"`
	}
)

// MarshalHardware writes a record as Tinkerbell hardware JSON (indented,
// newline-terminated), with metadata as a JSON object, so the output can be
// edited and pushed again. It fails only when metadata is not JSON.
func MarshalHardware(hw *hardware.Hardware) ([]byte, error) {
	if hw == nil {
		return nil, errors.New("marshal hardware: no record")
	}
	f := hwFile{ID: hw.GetId(), Version: hw.GetVersion(), BMC: bmcToFile(hw.GetBmc())}
	if m := hw.GetMetadata(); m != "" {
		tree, err := decodeJSON([]byte(m), "metadata", "metadata")
		if err != nil {
			return nil, fmt.Errorf("marshal hardware %s: %w", hw.GetId(), err)
		}
		var buf bytes.Buffer
		writeJSON(&buf, tree)
		f.Metadata = buf.Bytes()
	}
	if n := hw.GetNetwork(); n != nil {
		f.Network = &networkFile{Interfaces: []*interfaceFile{}}
		for _, in := range n.GetInterfaces() {
			f.Network.Interfaces = append(f.Network.Interfaces, interfaceToFile(in))
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("marshal hardware %s: %w", hw.GetId(), err)
	}
	return out.Bytes(), nil
}

func interfaceToFile(in *hardware.Hardware_Network_Interface) *interfaceFile {
	f := &interfaceFile{}
	if d := in.GetDhcp(); d != nil {
		f.DHCP = &dhcpFile{
			MAC: d.GetMac(), Hostname: d.GetHostname(), LeaseTime: d.GetLeaseTime(),
			NameServers: d.GetNameServers(), TimeServers: d.GetTimeServers(),
			Arch: d.GetArch(), UEFI: d.GetUefi(), IfaceName: d.GetIfaceName(),
		}
		if ip := d.GetIp(); ip != nil {
			f.DHCP.IP = &ipFile{Address: ip.GetAddress(), Netmask: ip.GetNetmask(), Gateway: ip.GetGateway(), Family: ip.GetFamily()}
		}
	}
	if n := in.GetNetboot(); n != nil {
		f.Netboot = &netbootFile{AllowPXE: n.GetAllowPxe(), AllowWorkflow: n.GetAllowWorkflow()}
		if x := n.GetIpxe(); x != nil {
			f.Netboot.IPXE = &ipxeFile{URL: x.GetUrl(), Contents: x.GetContents()}
		}
		if o := n.GetOsie(); o != nil {
			f.Netboot.Osie = &osieFile{BaseURL: o.GetBaseUrl(), Kernel: o.GetKernel(), Initrd: o.GetInitrd()}
		}
	}
	return f
}
