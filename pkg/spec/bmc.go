package spec

import (
	"fmt"
	"net/netip"
	"regexp"

	"github.com/herd-metal/herd/proto/hardware"
)

// The BMC protocols herd-bmc speaks, and their ports when the record
// gives none.
const (
	BMCIPMI    = "ipmi"
	BMCRedfish = "redfish"
)

var bmcDefaultPort = map[string]int32{BMCIPMI: 623, BMCRedfish: 443}

var bmcKeys = []string{"address", "protocol", "port", "credential"}

// bmcName is what a BMC credential or a herd-bmc instance may be called:
// a name that is safe in a URL path, a log line and a file name.
var bmcName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// CredentialNameProblem says what is wrong with a BMC credential name
// ("" : nothing).
func CredentialNameProblem(s string) string {
	if bmcName.MatchString(s) {
		return ""
	}
	if s == "" {
		return "is empty: name the BMC credential (herd bmc credential set NAME)"
	}
	return fmt.Sprintf("%s is not a credential name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", quote(s))
}

// AgentNameProblem says what is wrong with the name a herd-bmc instance
// takes jobs under (herd-bmc --agent; "" : nothing).
func AgentNameProblem(s string) string {
	if bmcName.MatchString(s) {
		return ""
	}
	if s == "" {
		return "missing: name the herd-bmc instance (herd-bmc --agent)"
	}
	return fmt.Sprintf("%s is not an agent name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", quote(s))
}

// BMCPort is the port a BMC answers on: the record's, or its protocol's.
func BMCPort(b *hardware.Hardware_BMC) int32 {
	if b.GetPort() != 0 {
		return b.GetPort()
	}
	return bmcDefaultPort[b.GetProtocol()]
}

func (r *jsonReader) bmc(v any) *hardware.Hardware_BMC {
	o := r.object("bmc", v, bmcKeys)
	if o == nil {
		return nil
	}
	return &hardware.Hardware_BMC{
		Address:    r.str("bmc", o, "address"),
		Protocol:   r.str("bmc", o, "protocol"),
		Port:       r.port("bmc", o, "port"),
		Credential: r.str("bmc", o, "credential"),
	}
}

func (r *jsonReader) port(path string, o *jsonObject, key string) int32 {
	n := r.integer(path, o, key)
	if n < 0 || n > 65535 {
		r.p.add(child(path, key), "%d is not a port (0 to 65535; 0 means the protocol's)", n)
		return 0
	}
	return int32(n)
}

// validateBMC checks a record's bmc: where the BMC answers, how, and the
// name of the credential to log in with (its secret is stored apart).
func validateBMC(p *problems, b *hardware.Hardware_BMC) {
	if b == nil {
		return
	}
	if msg := bmcAddressProblem(b.GetAddress()); msg != "" {
		p.add("bmc.address", "%s", msg)
	}
	if _, ok := bmcDefaultPort[b.GetProtocol()]; !ok {
		p.add("bmc.protocol", "%s is not a BMC protocol herd speaks: ipmi or redfish", quote(b.GetProtocol()))
	}
	if b.GetPort() < 0 || b.GetPort() > 65535 {
		p.add("bmc.port", "%d is not a port (0 to 65535; 0 means the protocol's)", b.GetPort())
	}
	if msg := CredentialNameProblem(b.GetCredential()); msg != "" {
		p.add("bmc.credential", "%s", msg)
	}
}

// bmcAddressProblem checks where a BMC answers: a host name or an address
// a server can have, loopback included (a BMC reached through an SSH
// tunnel or a simulator on the herd-bmc host answers there).
func bmcAddressProblem(s string) string {
	if a, err := netip.ParseAddr(s); err == nil && a.IsLoopback() && a.Zone() == "" {
		return ""
	}
	return hostProblem(s)
}

type bmcFile struct {
	Address    string `json:"address"`
	Protocol   string `json:"protocol"`
	Port       int32  `json:"port,omitempty"`
	Credential string `json:"credential"`
}

func bmcToFile(b *hardware.Hardware_BMC) *bmcFile {
	if b == nil {
		return nil
	}
	return &bmcFile{Address: b.GetAddress(), Protocol: b.GetProtocol(), Port: b.GetPort(), Credential: b.GetCredential()}
}
