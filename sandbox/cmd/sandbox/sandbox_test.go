package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/certs"
	hwspec "github.com/herd-metal/herd/pkg/spec"
)

func TestHardwareJSONIsValid(t *testing.T) {
	ms, err := newMachines(1, "vm-%d", true, false)
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	for _, pxe := range []bool{true, false} {
		hw, err := hwspec.ParseHardware([]byte(hardwareJSON(m, pxe)))
		if err != nil {
			t.Fatalf("allow_pxe=%v: %v", pxe, err)
		}
		i := hw.GetNetwork().GetInterfaces()[0]
		if i.GetNetboot().GetAllowPxe() != pxe || !i.GetNetboot().GetAllowWorkflow() || i.GetDhcp().GetIp().GetAddress() != m.IP ||
			!i.GetDhcp().GetUefi() || hw.GetMetadata() == "" || i.GetDhcp().GetHostname() != "vm-1" {
			t.Errorf("allow_pxe=%v: %v", pxe, i)
		}
	}
}

func TestTemplateIsValid(t *testing.T) {
	y := template("http://10.88.0.1/osie/disk.img.gz", strings.Repeat("ab", 32), "sandbox", 0)
	if err := hwspec.ValidateTemplate(y); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if strings.Contains(y, "PROGRESS_EVERY") {
		t.Errorf("image2disk's progress interval set without a fault:\n%s", y)
	}
	f := template("http://10.88.0.1/osie/disk.img.gz", strings.Repeat("ab", 32), "sandbox", 500*time.Millisecond)
	if err := hwspec.ValidateTemplate(f); err != nil || !strings.Contains(f, "PROGRESS_EVERY: 500ms") {
		t.Errorf("with a progress interval: %v\n%s", err, f)
	}
	for _, want := range []string{"image2disk", "writefile", "reboot", "DEST_DISK: /dev/vda2", "COMPRESSED: \"true\""} {
		if !strings.Contains(y, want) {
			t.Errorf("template lacks %q:\n%s", want, y)
		}
	}
}

func TestParseEventAndTimes(t *testing.T) {
	lines := []string{
		`{"workflow_id":"w","task_name":"boot","action_name":"boot","action_status":"STATE_RUNNING","seconds":"0","message":"ipxe script served","created_at":"2026-01-01T00:00:00Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"image2disk","action_status":"STATE_RUNNING","seconds":"0","created_at":"2026-01-01T00:00:10Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"image2disk","action_status":"STATE_SUCCESS","seconds":"12","created_at":"2026-01-01T00:00:22.500Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"reboot","action_status":"STATE_SUCCESS","seconds":1,"created_at":"2026-01-01T00:00:30Z"}`,
	}
	var evs []event
	for _, l := range lines {
		e, err := parseEvent(l)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if evs[2].State != "SUCCESS" || evs[2].Seconds != 12 || evs[3].Seconds != 1 {
		t.Fatalf("parsed %+v", evs)
	}
	at := actionTimes(evs)
	if len(at) != 3 || at[1].Name != "image2disk" || at[1].duration() != 12500*time.Millisecond || at[2].duration() != time.Second {
		t.Fatalf("actionTimes = %+v", at)
	}
	if !allActionsSucceeded(evs) {
		t.Error("boot notes must not count as an unfinished action")
	}
}

func TestMarkerHostname(t *testing.T) {
	for _, tc := range []struct {
		line, md, file string
		ok             bool
	}{
		{"[    3.2] herd-installed-os: hostname=vm-1 (metadata) file=vm-1", "vm-1", "vm-1", true},
		{"herd-installed-os: hostname=? (metadata: 404) file=herd-unprovisioned", "?", "herd-unprovisioned", true},
		{"something else", "", "", false},
	} {
		md, file, ok := markerHostname(tc.line)
		if md != tc.md || file != tc.file || ok != tc.ok {
			t.Errorf("%q: got %q %q %v", tc.line, md, file, ok)
		}
	}
}

func TestPidFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pids"), 0o755)
	exe, _ := os.Executable()
	os.WriteFile(filepath.Join(dir, "pids", "10-a.pid"), []byte("1\n/x\n"), 0o644)                                               // pid 1: refused
	os.WriteFile(filepath.Join(dir, "pids", "20-self.pid"), []byte(strings.Join([]string{itoa(os.Getpid()), exe}, "\n")), 0o644) // alive
	os.WriteFile(filepath.Join(dir, "pids", "30-other.pid"), []byte(itoa(os.Getpid())+"\n/usr/bin/not-this\n"), 0o644)           // reused pid
	pfs, err := readPidFiles(dir)
	if err != nil || len(pfs) != 2 {
		t.Fatalf("readPidFiles = %v, %v", pfs, err)
	}
	if !strings.HasSuffix(pfs[0].path, "30-other.pid") || pfs[0].alive() {
		t.Errorf("a pid running another program must not count as ours: %+v", pfs[0])
	}
	if !pfs[1].alive() {
		t.Errorf("own process not alive: %+v", pfs[1])
	}
}

func itoa(n int) string { return fmt.Sprint(n) }

func TestNetnsCommandsUse10x(t *testing.T) {
	for _, ovh := range []bool{false, true} {
		ms, err := newMachines(3, "vm%d", false, ovh)
		if err != nil {
			t.Fatal(err)
		}
		cmds := netnsCommands(ms)
		taps := 0
		for _, c := range cmds {
			s := strings.Join(c, " ")
			if c[0] != "ip" || (!strings.Contains(s, "-n "+nsName) && !strings.Contains(s, "netns add "+nsName)) {
				t.Errorf("%q does not stay in namespace %s", s, nsName)
			}
			if strings.Contains(s, "addr add") && !strings.Contains(s, " 10.") {
				t.Errorf("%q: only 10.x addresses", s)
			}
			if strings.Contains(s, "tuntap add") {
				taps++
			}
			if !ovh && strings.Contains(s, providerBridge) {
				t.Errorf("%q: no provider network without OVH", s)
			}
		}
		if want := map[bool]int{false: 3, true: 6}[ovh]; taps != want {
			t.Errorf("ovh=%v: %d taps, want %d", ovh, taps, want)
		}
	}
}

func TestNewMachines(t *testing.T) {
	ms, err := newMachines(maxMachines, "herd-sbx-vm", false, true)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range ms {
		for _, v := range []string{m.ID, m.MAC, m.IP, m.Hostname, m.Tap, m.ProviderMAC, m.ProviderTap} {
			if v == "" || seen[v] {
				t.Fatalf("machine %d: empty or repeated %q", m.N, v)
			}
			seen[v] = true
		}
		if !strings.HasPrefix(m.IP, "10.88.0.") || len(m.Tap) > 15 || len(m.ProviderTap) > 15 {
			t.Errorf("machine %d: %+v", m.N, m)
		}
	}
	if ms[0].Hostname != "herd-sbx-vm" || ms[1].Hostname != "herd-sbx-vm-2" {
		t.Errorf("hostnames %q %q", ms[0].Hostname, ms[1].Hostname)
	}
	for _, n := range []int{0, -1, maxMachines + 1} {
		if _, err := newMachines(n, "x", false, false); err == nil {
			t.Errorf("newMachines(%d) accepted", n)
		}
	}
}

func TestQemuArgs(t *testing.T) {
	f := vmFiles{disk: "/s/vm/1/disk.raw", console: "/s/vm/1/console.log", vars: "/s/vm/1/OVMF_VARS.fd", qmp: "/s/vm/1/qmp.sock"}
	for _, tc := range []struct {
		name      string
		uefi, ovh bool
		want, not []string
	}{
		{"bios", false, false,
			[]string{"e1000,netdev=n0,mac=52:54:00:88:00:50,romfile=" + ipxeROM + ",bootindex=1", "virtio-blk-pci,drive=disk0,bootindex=2",
				"-qmp unix:/s/vm/1/qmp.sock,server=on,wait=off"},
			[]string{"if=pflash", "n1"}},
		{"uefi", true, false,
			[]string{"if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode, "if=pflash,format=raw,unit=1,file=" + f.vars,
				"name=opt/org.tianocore/IPv4PXESupport,string=n", "name=opt/org.tianocore/IPv4Support,string=n"},
			[]string{"n1"}},
		{"ovh", false, true,
			// The provider NIC boots and comes first on the bus; herd's NIC has no ROM.
			[]string{"e1000,netdev=n0,mac=52:54:00:89:00:50,romfile=" + ipxeROM + ",bootindex=1,addr=0x10",
				"tap,id=n0,ifname=ptap0,", "e1000,netdev=n1,mac=52:54:00:88:00:50,romfile=,addr=0x11", "tap,id=n1,ifname=tap0,"},
			[]string{"if=pflash"}},
	} {
		ms, _ := newMachines(1, "vm", tc.uefi, tc.ovh)
		args := strings.Join(qemuArgs("qemu", ms[0], f, 2048, 2), " ")
		for _, w := range tc.want {
			if !strings.Contains(args, w) {
				t.Errorf("%s: lacks %q:\n%s", tc.name, w, args)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(args, n) {
				t.Errorf("%s: has %q:\n%s", tc.name, n, args)
			}
		}
	}
}

func TestProviderScript(t *testing.T) {
	s := providerScript("10.88.0.1")
	want := []string{"#!ipxe", "ifclose net0", "dhcp net1", "set iface net1", "chain --autofree http://10.88.0.1/auto.ipxe"}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	i := 0
	for _, l := range lines {
		if i < len(want) && l == want[i] {
			i++
		}
		if f := strings.Fields(l); len(f) > 0 && (f[0] == "params" || f[0] == "param") {
			t.Errorf("the provider's iPXE has no params command: %q", l)
		}
	}
	if i != len(want) {
		t.Errorf("provider script lacks %q (in order):\n%s", want[i], s)
	}
	args := strings.Join(dnsmasqArgs("dnsmasq", "/s/provider"), " ")
	for _, w := range []string{"--port=0", "--interface=" + providerBridge, "--bind-interfaces", "--dhcp-boot=tag:ipxe," + providerScriptName} {
		if !strings.Contains(args, w) {
			t.Errorf("dnsmasq args lack %q: %s", w, args)
		}
	}
}

func TestSumSeries(t *testing.T) {
	page := `# HELP herd_grpc_calls_total x
# TYPE herd_grpc_calls_total counter
herd_grpc_calls_total{code="OK",method="/github.com.tinkerbell.tink.protos.workflow.WorkflowService/ReportActionStatus"} 6
herd_grpc_calls_total{code="FailedPrecondition",method="/github.com.tinkerbell.tink.protos.workflow.WorkflowService/ReportActionStatus"} 2
herd_grpc_calls_total{code="OK",method="/x.WorkflowService/GetWorkflowContexts"} 40
herd_grpc_calls_total_other{code="OK",method="ReportActionStatus"} 100
herd_metadata_requests_total{route="meta-data/hostname",code="200"} 3
herd_metadata_requests_total{route="meta-data/local-hostname",code="200"} 5
herd_boots_dhcp_packets_total{outcome="boot_file",type="DISCOVER"} 1
herd_boots_dhcp_packets_total{outcome="boot_file",type="REQUEST"} 2.5e+00
weird_label{a="x\"y,z",b="w"} 7
`
	for _, tc := range []struct {
		s    series
		want float64
	}{
		{series{"herd_grpc_calls_total", map[string]string{"method": "*ReportActionStatus", "code": "OK"}}, 6},
		{series{"herd_grpc_calls_total", nil}, 48},
		{series{"herd_metadata_requests_total", map[string]string{"route": "meta-data/hostname", "code": "200"}}, 3},
		{series{"herd_boots_dhcp_packets_total", map[string]string{"outcome": "boot_file"}}, 3.5},
		{series{"herd_boots_dhcp_packets_total", map[string]string{"outcome": "nak"}}, 0},
		{series{"weird_label", map[string]string{"a": `x"y,z`, "b": "w"}}, 7},
		{series{"absent", nil}, 0},
	} {
		if got := sumSeries(page, tc.s); got != tc.want {
			t.Errorf("%v: %g, want %g", tc.s, got, tc.want)
		}
	}
}

func TestMetricsVerdict(t *testing.T) {
	exps := expectations(metricsURLs(serverReplicas(2)))
	before := make([]float64, len(exps))
	after := make([]float64, len(exps))
	for i, e := range exps {
		before[i] = 10
		after[i] = 10 + e.perMachine*2
	}
	if lines, ok := metricsVerdict(exps, before, after, 2); !ok || len(lines) != len(exps) {
		t.Errorf("enough movement refused: %v", lines)
	}
	after[len(after)-1]--
	if lines, ok := metricsVerdict(exps, before, after, 2); ok || !strings.Contains(lines[len(lines)-1], "TOO FEW") {
		t.Errorf("too little movement accepted: %v", lines)
	}
}

func TestProgressFor(t *testing.T) {
	ms, _ := newMachines(2, "vm%d", false, false)
	ps := []*progress{{m: ms[0]}, {m: ms[1]}}
	for _, tc := range []struct {
		mac, ip, remote string
		want            *progress
	}{
		{"52:54:00:88:00:51", "", "", ps[1]},
		{"52-54-00-88-00-50", "", "", ps[0]},
		{"", "10.88.0.51", "", ps[1]},
		{"", "", "10.88.0.50:1234", ps[0]},
		{"", "", "10.88.0.99:1", nil},
	} {
		if got := progressFor(ps, tc.mac, tc.ip, tc.remote); got != tc.want {
			t.Errorf("%+v: got %v", tc, got)
		}
	}
	if progressFor(ps[:1], "", "", "") != ps[0] {
		t.Error("with one machine every line is its")
	}
}

func TestParseDnsmasqLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want dnsmasqEvent
		ok   bool
	}{
		{"dnsmasq-dhcp[9904]: 558880064 DHCPOFFER(br1) 10.89.0.199 52:54:00:89:00:50 ",
			dnsmasqEvent{mac: "52:54:00:89:00:50", ip: "10.89.0.199", text: "DHCP OFFER 10.89.0.199 (dnsmasq)"}, true},
		{"dnsmasq-dhcp[9904]: 558880064 DHCPACK(br1) 10.89.0.199 52:54:00:89:00:50",
			dnsmasqEvent{mac: "52:54:00:89:00:50", ip: "10.89.0.199", text: "DHCP ACK 10.89.0.199 (dnsmasq)"}, true},
		{"dnsmasq-tftp[9904]: sent /s/provider/provider.ipxe to 10.89.0.199",
			dnsmasqEvent{ip: "10.89.0.199", text: "TFTP sent provider.ipxe (dnsmasq)", tftp: true}, true},
		{"dnsmasq-dhcp[9904]: 558880064 DHCPACK(br1)", dnsmasqEvent{}, false},
		{"dnsmasq-dhcp[9904]: 558880064 user class: iPXE", dnsmasqEvent{}, false},
	} {
		got, ok := parseDnsmasqLine(tc.line)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: got %+v %v, want %+v %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

// down removes the namespace the state directory names, and leaves this
// run's own name in place for the up that follows.
func TestDownKeepsOwnNetnsName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A name no namespace has: down finds nothing to delete.
	if err := os.WriteFile(filepath.Join(dir, netnsFile), []byte("herd-gone-test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func(n string) { nsName = n }(nsName)
	nsName = "herd-own-test"
	sb := &sandbox{dir: dir, out: io.Discard}
	if err := sb.down(); err != nil {
		t.Fatal(err)
	}
	if nsName != "herd-own-test" {
		t.Errorf("after down, nsName = %q, want this run's herd-own-test", nsName)
	}
	if exists(dir) {
		t.Errorf("down left %s", dir)
	}
}

func TestCopyFileIsItsOwn(t *testing.T) {
	dir := t.TempDir()
	src, dst, link := filepath.Join(dir, "src"), filepath.Join(dir, "dst"), filepath.Join(dir, "link")
	if err := os.WriteFile(src, []byte("vars"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(src, dst); err != nil {
		t.Fatal(err)
	}
	if err := linkOrCopy(src, link); err != nil {
		t.Fatal(err)
	}
	// Writing the copy must leave the original alone.
	if err := os.WriteFile(dst, []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{src: "vars", link: "vars", dst: "changed"} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
}

func TestParseDockerState(t *testing.T) {
	for _, c := range []struct {
		in   string
		want containerState
		ok   bool
	}{
		{"1234 0 healthy\n", containerState{Pid: 1234, Restarts: 0, Health: "healthy"}, true},
		{"0 3 starting", containerState{Pid: 0, Restarts: 3, Health: "starting"}, true},
		{"77 1 none", containerState{Pid: 77, Restarts: 1, Health: "none"}, true},
		{"", containerState{}, false},
		{"x 1 healthy", containerState{}, false},
		{"1 2", containerState{}, false},
	} {
		got, err := parseDockerState(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%q: %+v %v, want %+v ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestUserNetworks(t *testing.T) {
	got := userNetworks([]string{"bridge", "host", "none", "herd_default", "x"})
	if strings.Join(got, ",") != "herd_default,x" {
		t.Errorf("%v", got)
	}
	if len(userNetworks([]string{"bridge", "host", "none"})) != 0 {
		t.Error("the engine's own networks count")
	}
}

func TestStackFlag(t *testing.T) {
	var out, errb strings.Builder
	if code := run(context.Background(), []string{"up", "--stack", "kubernetes"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "want process or compose") {
		t.Errorf("exit %d: %s", code, errb.String())
	}
}

// The sandbox's registry takes pushes only with credentials, over TLS.
func TestRegistryConfigHasAuthAndTLS(t *testing.T) {
	c := registryConfig("/s/registry", certs.InDir("/s/registry/tls"), "/s/registry/htpasswd")
	for _, want := range []string{"htpasswd:", "path: /s/registry/htpasswd", "tls:", "certificate: /s/registry/tls/server.pem",
		"key: /s/registry/tls/server-key.pem", "addr: " + registry, "rootdirectory: /s/registry/storage"} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
}

func TestLeaks(t *testing.T) {
	secrets := []secret{{"the admin token", "adm1n7oken"}, {"the registry password", "regpw123"}}
	id := "5a4d0000-0000-4000-8000-525400880050"
	for _, c := range []struct {
		text string
		want string
	}{
		{`{"msg":"started","token_set":true}`, ""},
		{`auth: bearer adm1n7oken refused`, "the admin token"},
		{`kernel herd.token=` + id + `.3.1790000000.AbCdEfGhIjKlMnOpQrStUv`, "worker credential of " + id},
		{`hardware ` + id + ` pushed`, ""},
		{`regpw123 adm1n7oken`, "the admin token,the registry password"},
	} {
		if got := strings.Join(leaks(c.text, secrets, []string{id}), ","); got != c.want {
			t.Errorf("%q: %q, want %q", c.text, got, c.want)
		}
	}
}

func TestServiceLogs(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"herd-boots", "herd-server", "build", "deploy", "qemu-1", "registry"} {
		if err := os.WriteFile(filepath.Join(dir, "logs", n+".log"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := serviceLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	if strings.Join(names, ",") != "herd-boots.log,herd-server.log,registry.log" {
		t.Errorf("%v", names)
	}
}
