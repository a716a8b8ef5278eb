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
		"set herdunknown 0\nchain --autofree http://10.0.5.1:8080/machines/${herdmac}/boot.ipxe?" + AutoQuery() + " || goto herd_chain_retry",
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
	if !strings.Contains(s, AutoQuery()+" || goto herd_chain_retry\nexit\n") {
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

func TestAutoQuery(t *testing.T) {
	want := "iface=${iface}&net0=${net0/mac:hexhyp}&net1=${net1/mac:hexhyp}&net2=${net2/mac:hexhyp}&net3=${net3/mac:hexhyp}"
	if got := AutoQuery(); got != want {
		t.Fatalf("AutoQuery() = %q, want %q", got, want)
	}
}

// TestAutoUnknownCaller: what auto.ipxe prints when boots answers that it
// does not know the caller, where it stands in the script, and that it
// needs nothing Debian's iPXE lacks.
func TestAutoUnknownCaller(t *testing.T) {
	s := Auto(testCfg)
	retry, _, _ := strings.Cut(s[strings.Index(s, ":herd_chain_retry\n"):], "inc herdtry ||")
	tests := []struct {
		name string
		in   string // the part of the script to look in
		want []string
	}{
		{"whether the caller was named on the command line", s, []string{
			"set herdifaceset 1\nset herdhintu 0\nset herdhintn 0\nisset ${iface} && goto herd_iface ||\nset herdifaceset 0\nset iface net0\n",
		}},
		{"the unknown answer is told apart from a failed fetch", retry, []string{
			"iseq ${herdunknown} 1 || goto herd_hint_unreachable",
		}},
		{"once per run", retry, []string{
			"iseq ${herdhintu} 1 && goto herd_hint_done ||\nset herdhintu 1\n",
			"iseq ${herdhintn} 1 && goto herd_hint_done ||\nset herdhintn 1\n",
		}},
		{"the MAC, interface and address it used", retry, []string{
			"echo herd: herd-boots knows no machine by this request:\necho herd: MAC ${herdmac}, interface ${iface}, address ${${iface}/ip}\n",
			"iseq ${herdifaceset} 0 && echo herd: the script that chained auto.ipxe set no iface: auto.ipxe used net0 ||",
		}},
		{"every interface, open or closed", retry, []string{
			"isset ${net0/mac} && echo herd: - net0 ${net0/mac} ${net0/ip} ||",
			"isset ${net3/mac} && echo herd: - net3 ${net3/mac} ${net3/ip} ||",
			"\nifstat ||\n",
		}},
		{"what to set, and why", echoed(retry), []string{
			"iPXE sends a request through the interface its routing table picks, not the one iface names",
			"an open interface with a default route that comes first takes it, with its own address and MAC",
		}},
		{"the lines to set", retry, []string{
			"echo herd: > ifclose net0\necho herd: > dhcp netN\necho herd: > set iface netN\necho herd: > chain --autofree http://10.0.5.1:8080/auto.ipxe\n",
		}},
		{"a fetch that failed otherwise", retry, []string{
			":herd_hint_unreachable\n",
			"echo herd: the machine script from http://10.0.5.1:8080 failed (see the error above)\necho herd: for ${herdmac} (interface ${iface}, address ${${iface}/ip}).\n",
		}},
		{"a fetch that failed otherwise, what to check", echoed(retry[strings.Index(retry, ":herd_hint_unreachable"):]), []string{
			"A connection error or a timeout? If herd's network is not on the interface whose route comes first, the script that chains auto.ipxe must ifclose that one and set iface netN.",
		}},
		{"a reminder when it gives up", s, []string{
			":herd_chain_failed\niseq ${herdunknown} 1 && echo herd: herd-boots did not know MAC ${herdmac} (interface ${iface}): see above ||\necho herd: giving up on herd_chain after 10 tries\nexit 1\n",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.want {
				if !strings.Contains(tt.in, w) {
					t.Errorf("lacks %q in:\n%s", w, tt.in)
				}
			}
		})
	}
	checkWidth(t, s)
	// No word iPXE would take for a command terminator or a comment in an
	// echo line: "||", "&&" or "#" would end or comment out the line.
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "echo ") {
			continue
		}
		for _, f := range strings.Fields(l)[1:] {
			if f == "||" || f == "&&" || f == ";" || strings.HasPrefix(f, "#") {
				t.Errorf("echo line with %q: %s", f, l)
			}
		}
	}
}

func TestUnknownCaller(t *testing.T) {
	base := Unknown{MAC: "52:54:00:89:00:50", Iface: "net0", Remote: "10.89.0.150", Reason: ReasonUnknownMAC}
	with := func(f func(*Unknown)) Unknown { u := base; f(&u); return u }
	tests := []struct {
		name string
		u    Unknown
		want []string
	}{
		{"unknown MAC, another interface known (the OVH script without ifclose/set iface)",
			with(func(u *Unknown) { u.KnownIface, u.KnownMAC = "net1", "52:54:00:88:00:50" }),
			[]string{"herd-boots has no hardware for this caller (unknown_mac): MAC 52:54:00:89:00:50, interface net0, from 10.89.0.150",
				"net1's MAC 52:54:00:88:00:50 is known to herd, but the request came from 10.89.0.150 with net0's MAC 52:54:00:89:00:50",
				"ifclose net0", "set iface net1"}},
		{"unknown MAC, nothing known", base,
			[]string{"no hardware record has MAC 52:54:00:89:00:50 or address 10.89.0.150", "herd hardware push", "ifclose the provider's and set iface"}},
		{"require-ip",
			with(func(u *Unknown) { u.Reason = ReasonUnknownIP; u.MAC = "52:54:00:88:00:50"; u.Iface = "net1" }),
			[]string{"(unknown_ip)", "10.89.0.150 is no hardware's reserved address", "--http-require-ip", "ifclose it"}},
		{"no MAC",
			with(func(u *Unknown) { u.Reason = ReasonNoMAC; u.MAC = ""; u.Iface = "" }),
			[]string{"no hardware for this caller (no_mac): MAC (none), interface ?, from 10.89.0.150", "names no MAC: chain auto.ipxe"}},
		{"another machine's address",
			with(func(u *Unknown) { u.Reason = ReasonOtherMachine }),
			[]string{"(other_machine)", "10.89.0.150 is reserved for another hardware than MAC 52:54:00:89:00:50's"}},
		{"the known interface is the one used: no ifclose hint",
			with(func(u *Unknown) { u.Reason = ReasonUnknownIP; u.KnownIface, u.KnownMAC = "net0", "52:54:00:89:00:50" }),
			[]string{"--http-require-ip"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := UnknownCaller(tt.u)
			checkSyntax(t, s)
			text := echoed(s)
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("lacks %q:\n%s", w, s)
				}
			}
			if !strings.HasSuffix(s, "\nset herdunknown 1\nexit 1\n") {
				t.Errorf("does not tell auto.ipxe and fail:\n%s", s)
			}
			if paramLines.MatchString(s) || strings.Contains(s, "${") {
				t.Errorf("params or a setting expansion in:\n%s", s)
			}
			if h := UnknownHint(tt.u); strings.Contains(h, "\n") || !strings.HasSuffix(text, h) {
				t.Errorf("the script does not end its text with the hint %q:\n%s", h, s)
			}
			checkWidth(t, s)
		})
	}
}

// TestKernelArgsOptional: the registry's credentials and the CA pin are
// on the kernel line when set, and absent otherwise.
func TestKernelArgsOptional(t *testing.T) {
	const pin = "5527e537a2771ec638e8b104b099c791c500685201411fdb09afb23de25c640c"
	tests := []struct {
		name, user, pass, pin string
		want, notWant         []string
	}{
		{"no credentials", "", "", "", []string{"docker_registry=10.0.5.1:5000 syslog_host="}, []string{"registry_username", "registry_password"}},
		{"htpasswd credentials", "herd", "s3cr:t!", "", []string{"docker_registry=10.0.5.1:5000 registry_username=herd registry_password=s3cr:t! syslog_host="}, nil},
		{"no CA pin", "", "", "", []string{"grpc_cert_url=http://10.0.5.1:42114/cert tinkerbell="}, []string{"herd.ca_sha256"}},
		{"CA pin", "", "", pin, []string{"grpc_cert_url=http://10.0.5.1:42114/cert herd.ca_sha256=" + pin + " tinkerbell="}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCfg
			c.RegistryUser, c.RegistryPassword, c.CASHA256 = tt.user, tt.pass, tt.pin
			a := KernelArgs(c, osieMachine)
			for _, w := range tt.want {
				if !strings.Contains(a, w) {
					t.Errorf("lacks %q: %s", w, a)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(a, w) {
					t.Errorf("has %q: %s", w, a)
				}
			}
			if !strings.Contains(ForMachine(c, osieMachine), a) {
				t.Errorf("the OSIE script does not carry the kernel line %s", a)
			}
		})
	}
}

func TestCheckKernelValue(t *testing.T) {
	tests := []struct {
		v       string
		wantErr string
	}{
		{"", ""},
		{"s3cr:t!#&|;'=,.-_~", ""},
		{"pässwörd", ""},
		{"two words", "blank"},
		{"tab\there", "blank"},
		{"new\nline", "blank"},
		{`quo"te`, "double quote"},
		{"${root}", "$"},
		{`back\slash`, "backslash"},
		{"del\x7f", "control"},
	}
	for _, tt := range tests {
		err := CheckKernelValue(tt.v)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tt.v, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: err %v, want %q", tt.v, err, tt.wantErr)
		case err != nil && tt.v != "" && strings.Contains(err.Error(), tt.v):
			t.Errorf("the error shows the value: %v", err)
		}
	}
}

// echoed is the text of s's "echo herd: ..." lines, joined by spaces: what
// a reader sees, whatever the line breaks.
func echoed(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if t, ok := strings.CutPrefix(l, "echo herd: "); ok {
			out = append(out, t)
		}
	}
	return strings.Join(out, " ")
}

// checkWidth: the console lines a script prints without settings fit 80
// columns (iPXE's console wraps them mid-word).
func checkWidth(t *testing.T, s string) {
	t.Helper()
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "echo "); i >= 0 && !strings.Contains(l, "${") && !strings.Contains(l, "http://") {
			if text := strings.TrimSuffix(l[i+len("echo "):], " ||"); len(text) >= 80 {
				t.Errorf("%d columns: %s", len(text), text)
			}
		}
	}
}

func TestWrap(t *testing.T) {
	tests := []struct {
		in    string
		width int
		want  []string
	}{
		{"", 10, nil},
		{"one two three", 7, []string{"one two", "three"}},
		{"one  two\nthree", 80, []string{"one two three"}},
		{"a averyverylongword b", 5, []string{"a", "averyverylongword", "b"}},
	}
	for _, tt := range tests {
		if got := wrap(tt.in, tt.width); strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("wrap(%q, %d) = %q, want %q", tt.in, tt.width, got, tt.want)
		}
	}
}
