package script

import (
	"regexp"
	"strings"
	"testing"
)

var testCfg = Config{
	BaseURL: "http://10.0.5.1:8080", GRPCAuthority: "10.0.5.1:42113", CertURL: "http://10.0.5.1:42114/cert",
	MetadataURL: "http://10.0.5.1:50061", Registry: "10.0.5.1:5000", SyslogHost: "10.0.5.1", Console: "ttyS0,115200",
	OSIEBaseURL: "http://10.0.5.1:8080/osie", Kernel: "vmlinuz-{arch}", Initrd: "initramfs-{arch}",
}

var osieMachine = Machine{HardwareID: "hw-1", MAC: "52-54-00-12-34-56", WorkerToken: "hw-1.c2lnbmF0dXJl", AllowPXE: true, AllowWorkflow: true}

// paramLines finds params/param commands (at the start of a line).
var paramLines = regexp.MustCompile(`(?m)^\s*params?\b`)

// checkSyntax does the checks iPXE's parser would fail on: the header,
// every goto has its label, no empty line continuation.
func checkSyntax(t *testing.T, s string) {
	t.Helper()
	if !strings.HasPrefix(s, "#!ipxe\n") {
		t.Fatalf("no #!ipxe header:\n%s", s)
	}
	labels := map[string]bool{}
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ":") {
			labels[l[1:]] = true
		}
	}
	for _, m := range regexp.MustCompile(`goto (\S+)`).FindAllStringSubmatch(s, -1) {
		if !labels[m[1]] {
			t.Errorf("goto %s: no such label in\n%s", m[1], s)
		}
	}
}

func TestAuto(t *testing.T) {
	s := Auto(testCfg)
	checkSyntax(t, s)
	for _, want := range []string{
		"isset ${iface} && goto herd_iface ||",
		"set iface net0",
		"set herdmac ${${iface}/mac:hexhyp}",
		"isset ${herdmac} || set herdmac ${net0/mac:hexhyp}",
		"chain --autofree http://10.0.5.1:8080/machines/${herdmac}/boot.ipxe || goto herd_chain_retry",
		"iseq ${herdtry} 10 && goto herd_chain_failed ||",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("auto.ipxe lacks %q:\n%s", want, s)
		}
	}
	if paramLines.MatchString(s) {
		t.Errorf("auto.ipxe uses params:\n%s", s)
	}
	// A machine script that returns (netboot not allowed exits to the
	// next boot device) must end auto.ipxe, not fall into its retry loop:
	// a provider's script chaining auto.ipxe on every boot would loop.
	if !strings.Contains(s, "/boot.ipxe || goto herd_chain_retry\nexit\n") {
		t.Errorf("auto.ipxe does not exit after the machine script returns:\n%s", s)
	}
}

func TestMachineScripts(t *testing.T) {
	custom := osieMachine
	custom.IPXEURL = "http://example.test/custom.ipxe"
	contents := osieMachine
	contents.IPXEContents = "echo custom\nboot"
	denied := osieMachine
	denied.AllowPXE = false
	noWorkflow := osieMachine
	noWorkflow.AllowWorkflow = false
	noWorkflow.Arch, noWorkflow.Console, noWorkflow.KernelArgs = "aarch64", "ttyAMA0", "quiet"
	ownOSIE := osieMachine
	ownOSIE.OSIEBaseURL, ownOSIE.Kernel, ownOSIE.Initrd = "http://mirror/osie", "k", "i"

	tests := []struct {
		name      string
		m         Machine
		want      []string
		notWant   []string
		hasEvents bool
	}{
		{name: "osie", m: osieMachine, hasEvents: true, want: []string{
			"kernel --name vmlinuz http://10.0.5.1:8080/osie/vmlinuz-x86_64 grpc_authority=10.0.5.1:42113 grpc_cert_url=http://10.0.5.1:42114/cert tinkerbell=http://10.0.5.1:8080 worker_id=hw-1 instance_id=hw-1 docker_registry=10.0.5.1:5000 syslog_host=10.0.5.1 packet_action=workflow herd.token=hw-1.c2lnbmF0dXJl herd.metadata=http://10.0.5.1:50061 herd.mac=52:54:00:12:34:56 initrd=initrd console=ttyS0,115200 || goto herd_kernel_retry",
			"initrd --name initrd http://10.0.5.1:8080/osie/initramfs-x86_64 || goto herd_initrd_retry",
			"boot || goto herd_boot_failed",
			":herd_kernel_retry", ":herd_initrd_retry",
		}},
		{name: "no workflow, arm64, own console and args", m: noWorkflow, hasEvents: true, want: []string{
			"/osie/vmlinuz-aarch64 ", "/osie/initramfs-aarch64 ", "packet_action=none", "console=ttyAMA0 quiet || goto",
		}},
		{name: "hardware's osie", m: ownOSIE, hasEvents: true, want: []string{"kernel --name vmlinuz http://mirror/osie/k ", "initrd --name initrd http://mirror/osie/i "}},
		{name: "custom url", m: custom, want: []string{"chain --autofree http://example.test/custom.ipxe || goto herd_custom_retry"}, notWant: []string{"kernel", "herd.token"}},
		{name: "custom contents", m: contents, want: []string{"#!ipxe\necho custom\nboot\n"}, notWant: []string{"kernel"}},
		{name: "not allowed", m: denied, want: []string{"echo herd: netboot is not allowed for hardware hw-1", "\nexit\n"}, notWant: []string{"kernel", "chain", "herd.token"}},
	}
	for _, tt := range tests {
		for _, p := range []Params{ParamsOff, ParamsOn, ParamsAuto} {
			t.Run(tt.name+"/"+string(p), func(t *testing.T) {
				m := tt.m
				m.Params = p
				s := ForMachine(testCfg, m)
				checkSyntax(t, s)
				for _, w := range tt.want {
					if !strings.Contains(s, w) {
						t.Errorf("lacks %q:\n%s", w, s)
					}
				}
				for _, w := range tt.notWant {
					if strings.Contains(s, w) {
						t.Errorf("has %q:\n%s", w, s)
					}
				}
				usesParams := paramLines.MatchString(s)
				getEvent := "imgfetch --name herdev http://10.0.5.1:8080/events?event=kernel_fetched&hardware_id=hw-1&mac=52-54-00-12-34-56 && imgfree herdev ||"
				postEvent := "imgfetch --name herdev http://10.0.5.1:8080/events##params && imgfree herdev ||"
				switch {
				case !tt.hasEvents:
					if usesParams {
						t.Errorf("params in a script without events:\n%s", s)
					}
				case p == ParamsOff:
					if usesParams || !strings.Contains(s, getEvent) || strings.Contains(s, "##params") {
						t.Errorf("off: want GET events and no params:\n%s", s)
					}
				case p == ParamsOn:
					if !strings.Contains(s, "params\nparam event kernel_fetched\n") || !strings.Contains(s, postEvent) || strings.Contains(s, "events?") {
						t.Errorf("on: want POSTed events only:\n%s", s)
					}
				case p == ParamsAuto:
					for _, w := range []string{"params || goto herdev_kernel_fetched_get", postEvent, ":herdev_kernel_fetched_get\n" + getEvent, ":herdev_initrd_fetched_done"} {
						if !strings.Contains(s, w) {
							t.Errorf("auto: lacks %q:\n%s", w, s)
						}
					}
				}
			})
		}
	}
}

func TestParseParams(t *testing.T) {
	for in, want := range map[string]Params{"": ParamsAuto, "on": ParamsOn, "off": ParamsOff, "auto": ParamsAuto} {
		if got, err := ParseParams(in); err != nil || got != want {
			t.Errorf("ParseParams(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseParams("yes"); err == nil {
		t.Error("ParseParams(yes) accepted")
	}
}
