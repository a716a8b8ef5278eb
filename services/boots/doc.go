// Package boots is herd-boots: the DHCP, TFTP and HTTP iPXE service that
// network-boots machines into the OSIE.
//
//	cmd/herd-boots      wiring only: flags (HERD_* env) -> inventory, servers
//	internal/dhcp       firmware classification, boot file decision, replies
//	                    (reservation / proxy), reply routing, the server4 loop
//	internal/script     iPXE scripts: /auto.ipxe, per-machine, ipxe-params
//	internal/tftp       iPXE binaries over TFTP (and the /ipxe/ HTTP route)
//	internal/httpd      scripts, /events, /ipxe/, /osie/, /metrics, /healthz
//	internal/syslog     UDP syslog receiver (RFC 3164 / 5424, iPXE's form)
//	internal/hw         read-only views of a hardware record
//	internal/netnstest  network namespaces and veth pairs for tests
//	internal/realtest   CI=true: a missing real part fails, never skips
//
// Per-hardware settings live in the record's metadata under "boots":
//
//	{"boots": {"ipxe_params": "off", "console": "ttyS1,115200", "kernel_args": "..."}}
//
// ipxe_params overrides --ipxe-params (on | off | auto) for that machine.
//
// A script or event request boots cannot tie to a hardware record (an
// "unknown caller": no record has its MAC or address) is counted in
// herd_boots_unknown_callers_total{route, reason} and logged as a warning
// with the MAC, the source address, the interface auto.ipxe reported and a
// hint, one line per MAC per 10 s. auto.ipxe names its interface and every
// NIC's MAC in its request (?iface=net1&net0=...), so the hint can say
// which of the machine's NICs herd knows; to auto.ipxe boots answers with
// a script that says so on the console and sets ${herdunknown}, and
// auto.ipxe prints what it tried and what to set (ifclose, set iface).
//
// --registry, --registry-user and --registry-password go on the OSIE's
// kernel line as Tinkerbell v0.6's docker_registry=, registry_username=
// and registry_password= (the password is never logged).
package boots
