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
package boots
