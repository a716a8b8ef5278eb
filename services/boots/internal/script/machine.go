package script

import (
	"errors"
	"fmt"
	"strings"
)

// Machine is what a machine's script is made of, taken from its hardware
// record and inventory entry.
type Machine struct {
	HardwareID string
	// MAC in iPXE's :hexhyp form, 52-54-00-12-34-56.
	MAC           string
	Arch          string // dhcp.arch: x86_64, aarch64
	WorkerToken   string
	AllowPXE      bool
	AllowWorkflow bool
	// Custom iPXE (netboot.ipxe): URL to chain, or the script itself.
	IPXEURL      string
	IPXEContents string
	// netboot.osie; empty fields take Config's defaults.
	OSIEBaseURL, Kernel, Initrd string
	Params                      Params
	// Per-hardware console and extra kernel arguments (metadata "boots").
	Console, KernelArgs string
}

// Kind says which script a machine gets, for logs and metrics.
func Kind(m Machine) string {
	switch {
	case !m.AllowPXE:
		return "not_allowed"
	case m.IPXEContents != "":
		return "custom_contents"
	case m.IPXEURL != "":
		return "custom_url"
	}
	return "osie"
}

// ForMachine renders m's boot script: the OSIE, the hardware's own iPXE,
// or an explanation and exit when netboot is not allowed.
func ForMachine(c Config, m Machine) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	switch Kind(m) {
	case "not_allowed":
		w("#!ipxe")
		w("echo herd: netboot is not allowed for hardware %s (%s): netboot.allow_pxe is false", m.HardwareID, m.MAC)
		w("echo herd: exiting to the next boot device")
		w("exit")
		return b.String()
	case "custom_contents":
		s := m.IPXEContents
		if !strings.HasPrefix(s, "#!ipxe") {
			s = "#!ipxe\n" + s
		}
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		return s
	}
	w("#!ipxe")
	w("echo herd: hardware %s (%s)", m.HardwareID, m.MAC)
	w("set herdtry:int32 0")
	if Kind(m) == "custom_url" {
		w("echo herd: chaining the hardware's own iPXE script")
		w(":herd_custom")
		w("chain --autofree %s || goto herd_custom_retry", m.IPXEURL)
		w("exit") // the hardware's script returned: so does this one
		retry(w, "herdtry", "herd_custom", c.retries(), c.delay())
		return b.String()
	}
	base, kernel, initrd := first(m.OSIEBaseURL, c.OSIEBaseURL), first(m.Kernel, c.Kernel), first(m.Initrd, c.Initrd)
	arch := first(m.Arch, "x86_64")
	kernel, initrd = strings.ReplaceAll(kernel, "{arch}", arch), strings.ReplaceAll(initrd, "{arch}", arch)
	w("echo herd: loading the OSIE from %s", base)
	w(":herd_kernel")
	w("kernel --name vmlinuz %s/%s %s || goto herd_kernel_retry", base, kernel, KernelArgs(c, m))
	event(w, c, m.Params, m.HardwareID, m.MAC, EventKernelFetched)
	w("set herdtry:int32 0")
	w(":herd_initrd")
	w("initrd --name initrd %s/%s || goto herd_initrd_retry", base, initrd)
	event(w, c, m.Params, m.HardwareID, m.MAC, EventInitrdFetched)
	w("echo herd: booting")
	w("boot || goto herd_boot_failed")
	w(":herd_boot_failed")
	w("echo herd: boot failed")
	w("exit 1")
	retry(w, "herdtry", "herd_kernel", c.retries(), c.delay())
	retry(w, "herdtry", "herd_initrd", c.retries(), c.delay())
	return b.String()
}

// KernelArgs is the OSIE kernel command line. It keeps Tinkerbell v0.6's
// names where they exist, so a Tinkerbell OSIE finds its settings:
//
//	grpc_authority=   herd-server gRPC host:port
//	grpc_cert_url=    where the worker fetches the server's CA
//	tinkerbell=       boots' HTTP root
//	worker_id=        the hardware id (also instance_id=)
//	docker_registry=  registry for action images
//	registry_username=, registry_password=  its credentials, when set
//	syslog_host=      boots' syslog receiver
//	packet_action=    workflow, or none when allow_workflow is false
//
// and adds herd's own:
//
//	herd.token=     the worker's credential (bearer token)
//	herd.ca_sha256= the pin of the CA at grpc_cert_url, when boots knows it
//	herd.metadata=  herd-metadata's root
//	herd.mac=       the booting interface's MAC
//
// (the names the OSIE's init reads: worker/osie/README.md)
//
// then initrd=initrd (UEFI kernels find the initrd by this name),
// console= (per-hardware override or the default) and the hardware's extra
// arguments. Empty settings are left out.
func KernelArgs(c Config, m Machine) string {
	var a []string
	add := func(k, v string) {
		if v != "" {
			a = append(a, k+"="+v)
		}
	}
	add("grpc_authority", c.GRPCAuthority)
	add("grpc_cert_url", c.CertURL)
	add("herd.ca_sha256", c.CASHA256)
	add("tinkerbell", c.BaseURL)
	add("worker_id", m.HardwareID)
	add("instance_id", m.HardwareID)
	add("docker_registry", c.Registry)
	add("registry_username", c.RegistryUser)
	add("registry_password", c.RegistryPassword)
	add("syslog_host", c.SyslogHost)
	action := "workflow"
	if !m.AllowWorkflow {
		action = "none"
	}
	add("packet_action", action)
	add("herd.token", m.WorkerToken)
	add("herd.metadata", c.MetadataURL)
	add("herd.mac", strings.ReplaceAll(m.MAC, "-", ":"))
	add("initrd", "initrd")
	add("console", first(m.Console, c.Console))
	if m.KernelArgs != "" {
		a = append(a, m.KernelArgs)
	}
	return strings.Join(a, " ")
}

// CheckKernelValue refuses a value that would not reach the OSIE as it
// is: the kernel splits its command line at blanks and strips double
// quotes, and iPXE expands ${...} in the kernel line it runs. The error
// never holds the value (it may be a password).
func CheckKernelValue(v string) error {
	for _, r := range v {
		switch {
		case r <= ' ' || r == 0x7f:
			return errors.New("holds a blank or control character, which would cut the kernel command line: choose one without")
		case r == '"':
			return errors.New(`holds a double quote, which the kernel strips: choose one without`)
		case r == '$':
			return errors.New("holds a $, which iPXE would expand as a setting: choose one without")
		case r == '\\':
			return errors.New(`holds a backslash, which iPXE builds may read as an escape: choose one without`)
		}
	}
	return nil
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
