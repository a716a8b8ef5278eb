package main

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestParseCmdline(t *testing.T) {
	def := Config{Worker: DefaultWorker, Console: DefaultConsole, After: PowerOff}
	with := func(f func(*Config)) Config { c := def; f(&c); return c }
	tests := []struct {
		name    string
		line    string
		want    Config
		wantErr string
	}{
		{"empty", "", def, ""},
		{"unrelated kernel parameters", "console=ttyS0 quiet root=/dev/ram0 initrd=initramfs.img\n", def, ""},
		{"herd names", `herd.server=10.1.0.1:42113 herd.worker_id=hw-1 herd.token=abc herd.cert_url=http://10.1.0.1:42114/cert herd.metadata=http://10.1.0.1:50061 herd.registry=10.1.0.1:5000 herd.registry_user=u herd.registry_pass=p herd.syslog=10.1.0.1 herd.console=/dev/ttyS1 herd.worker=/bin/w herd.after=reboot herd.modules=e1000,,igb herd.debug herd.mac=aa:bb:cc:dd:ee:ff`,
			Config{Server: "10.1.0.1:42113", WorkerID: "hw-1", Token: "abc", CertURL: "http://10.1.0.1:42114/cert",
				MetadataURL: "http://10.1.0.1:50061", Registry: "10.1.0.1:5000", RegistryUser: "u", RegistryPass: "p",
				Syslog: "10.1.0.1", Console: "/dev/ttyS1", Worker: "/bin/w", After: Reboot, Modules: []string{"e1000", "igb"},
				Debug: true, MAC: mustMAC("aa:bb:cc:dd:ee:ff")}, ""},
		{"Tinkerbell v0.6 aliases", "grpc_authority=10.1.0.1:42113 grpc_cert_url=http://x/cert worker_id=aa:bb:cc:dd:ee:ff docker_registry=r:5000 registry_username=u registry_password=p syslog_host=10.1.0.1 packet_base_url=http://m",
			with(func(c *Config) {
				c.Server, c.CertURL, c.WorkerID, c.Registry, c.RegistryUser, c.RegistryPass, c.Syslog, c.MetadataURL =
					"10.1.0.1:42113", "http://x/cert", "aa:bb:cc:dd:ee:ff", "r:5000", "u", "p", "10.1.0.1", "http://m"
			}), ""},
		{"herd name wins over its alias, either order", "grpc_authority=old:1 herd.server=new:2 herd.registry=new worker_id=x docker_registry=old",
			with(func(c *Config) { c.Server, c.Registry, c.WorkerID = "new:2", "new", "x" }), ""},
		{"BOOTIF from iPXE/PXELINUX", "BOOTIF=01-52-54-00-12-34-56", with(func(c *Config) { c.MAC = mustMAC("52:54:00:12:34:56") }), ""},
		{"herd.mac wins over BOOTIF", "BOOTIF=01-52-54-00-12-34-56 herd.mac=52:54:00:00:00:01",
			with(func(c *Config) { c.MAC = mustMAC("52:54:00:00:00:01") }), ""},
		{"herd.mac wins over a later BOOTIF", "herd.mac=52:54:00:00:00:01 BOOTIF=01-52-54-00-12-34-56",
			with(func(c *Config) { c.MAC = mustMAC("52:54:00:00:00:01") }), ""},
		{"quoted value with a space", `herd.worker="/opt/my worker" quiet`, with(func(c *Config) { c.Worker = "/opt/my worker" }), ""},
		{"debug off", "herd.debug=0", def, ""},
		{"unknown herd keys are kept for the log", "herd.zzz=1 herd.aaa", with(func(c *Config) { c.Unknown = []string{"herd.aaa", "herd.zzz"} }), ""},
		{"power off spellings", "herd.after=halt", with(func(c *Config) { c.After = PowerOff }), ""},
		{"bad after", "herd.after=sleep", Config{}, "herd.after"},
		{"bad mac", "herd.mac=zz", Config{}, "herd.mac"},
		{"bad BOOTIF", "BOOTIF=01-52-54", Config{}, "BOOTIF"},
		{"CA pin", "herd.ca_sha256=" + strings.ToUpper(testPin), with(func(c *Config) { c.CASHA256 = testPin }), ""},
		{"CA pin too short", "herd.ca_sha256=" + testPin[:40], Config{}, "herd.ca_sha256"},
		{"CA pin not hex", "herd.ca_sha256=" + strings.Repeat("g", 64), Config{}, "64 hex digits"},
		// Found by FuzzParseCmdline: a quoted value across a newline.
		{"control character in a quoted value", "herd.token=\"se\ncret\"", Config{}, "herd.token: the value holds control character 0x0a at byte 2"},
		{"control character in an alias", "registry_password=\"p\tw\"", Config{}, "herd.registry_pass: the value holds control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.line)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSyslogAddr(t *testing.T) {
	for in, want := range map[string]string{"": "", "10.0.0.1": "10.0.0.1:514", "10.0.0.1:1514": "10.0.0.1:1514",
		"boots.local": "boots.local:514", "fd00::1": "[fd00::1]:514", "[fd00::1]": "[fd00::1]:514"} {
		if got := (Config{Syslog: in}).SyslogAddr(); got != want {
			t.Errorf("SyslogAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// testPin is a CA pin of the right shape (the SHA-256 of "herd").
const testPin = "5527e537a2771ec638e8b104b099c791c500685201411fdb09afb23de25c640c"

func TestWorkerEnv(t *testing.T) {
	c := Config{Server: "s:1", WorkerID: "id", Token: "tok", Registry: "r:5000", Debug: true, CASHA256: testPin}
	got := c.WorkerEnv("/run/docker.sock", "/run/herd/power")
	for _, want := range []string{"DOCKER_HOST=unix:///run/docker.sock", "HERD_POWER_FILE=/run/herd/power", "HERD_SERVER=s:1", "HERD_CA_SHA256=" + testPin,
		"TINKERBELL_GRPC_AUTHORITY=s:1", "HERD_ID=id", "WORKER_ID=id", "HERD_TOKEN=tok", "HERD_REGISTRY=r:5000",
		"DOCKER_REGISTRY=r:5000", "HERD_LOG_LEVEL=debug"} {
		if !slices.Contains(got, want) {
			t.Errorf("env lacks %s: %v", want, got)
		}
	}
	for _, e := range got {
		if strings.HasPrefix(e, "HERD_CERT_URL=") || strings.HasPrefix(e, "REGISTRY_PASSWORD=") {
			t.Errorf("empty setting passed: %s", e)
		}
	}
}

func TestDecidePower(t *testing.T) {
	tests := []struct {
		request  string
		err      error
		fallback PowerAction
		want     PowerAction
		why      string
	}{
		{"reboot\n", nil, PowerOff, Reboot, "requested"},
		{"poweroff", nil, Reboot, PowerOff, "requested"},
		{" HALT \nextra", nil, Reboot, PowerOff, "requested"},
		{"", errors.New("no such file"), Reboot, Reboot, "no request"},
		{"", nil, PowerOff, PowerOff, "empty"},
		{"dance", nil, Reboot, Reboot, "unknown power action"},
	}
	for _, tt := range tests {
		got, why := DecidePower(tt.request, tt.err, tt.fallback)
		if got != tt.want || !strings.Contains(why, tt.why) {
			t.Errorf("DecidePower(%q, %v, %s) = %s, %q; want %s, ~%q", tt.request, tt.err, tt.fallback, got, why, tt.want, tt.why)
		}
	}
}

const modulesDep = `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/nvme/host/nvme-core.ko:
kernel/fs/overlayfs/overlay.ko:
`

func TestLoadOrder(t *testing.T) {
	deps, err := ParseModulesDep(strings.NewReader(modulesDep))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		wanted        []string
		files, missed []string
	}{
		{[]string{"virtio_net"}, []string{"kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"}, nil},
		{[]string{"nvme", "nvme-core", "overlay"}, []string{"kernel/drivers/nvme/host/nvme-core.ko", "kernel/drivers/nvme/host/nvme.ko", "kernel/fs/overlayfs/overlay.ko"}, nil},
		{[]string{"failover", "virtio_net", "ext4"}, []string{"kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"}, []string{"ext4"}},
		{nil, nil, nil},
	}
	for _, tt := range tests {
		files, missed := deps.LoadOrder(tt.wanted)
		if !reflect.DeepEqual(files, tt.files) || !reflect.DeepEqual(missed, tt.missed) {
			t.Errorf("LoadOrder(%v) = %v, %v; want %v, %v", tt.wanted, files, missed, tt.files, tt.missed)
		}
	}
	if _, err := ParseModulesDep(strings.NewReader("no colon here\n")); err == nil {
		t.Error("a line without a colon parsed")
	}
}

func TestModuleSpecsAndDrivers(t *testing.T) {
	specs, err := ParseModuleSpecs(strings.NewReader("# comment\noverlay always\nvirtio_net\n\ne1000e # intel\next4 later\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []ModuleSpec{{"overlay", true, false}, {"virtio_net", false, false}, {"e1000e", false, false}, {"ext4", false, true}}
	if !reflect.DeepEqual(specs, want) {
		t.Fatalf("specs = %v, want %v", specs, want)
	}
	aliases, err := ParseModulesAlias(strings.NewReader(`# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v000014E4d00001639sv*sd*bc*sc*i* bnx2
`))
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"virtio_pci": true, "virtio_net": true, "virtio_blk": true, "e1000e": true}
	tests := []struct {
		devices []string
		want    []string
	}{
		{[]string{"pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00", "pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00"}, []string{"virtio_pci"}},
		{[]string{"virtio:d00000001v00001AF4", "virtio:d00000002v00001AF4", "virtio:d00000001v00001AF4"}, []string{"virtio_net", "virtio_blk"}},
		{[]string{"pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00"}, []string{"e1000e"}},
		{[]string{"pci:v000014E4d00001639sv00000000sd00000000bc02sc00i00"}, nil}, // not shipped
		{nil, nil},
	}
	for _, tt := range tests {
		if got := DriversFor(aliases, tt.devices, allowed); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("DriversFor(%v) = %v, want %v", tt.devices, got, tt.want)
		}
	}
}

func TestCandidateNICs(t *testing.T) {
	nics := []NIC{
		{Name: "lo", Ether: false},
		{Name: "eth1", MAC: mustMAC("52:54:00:00:00:02"), Ether: true},
		{Name: "eth0", MAC: mustMAC("52:54:00:00:00:01"), Ether: true},
		{Name: "ib0", MAC: make(net.HardwareAddr, 20), Ether: true},
		{Name: "tun0", Ether: false},
	}
	names := func(ns []NIC) (out []string) {
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return out
	}
	if got := names(CandidateNICs(nics, nil)); !reflect.DeepEqual(got, []string{"eth0", "eth1"}) {
		t.Errorf("no boot MAC: %v", got)
	}
	if got := names(CandidateNICs(nics, mustMAC("52:54:00:00:00:02"))); !reflect.DeepEqual(got, []string{"eth1"}) {
		t.Errorf("boot MAC eth1: %v", got)
	}
	if got := CandidateNICs(nics, mustMAC("52:54:00:00:00:09")); len(got) != 0 {
		t.Errorf("absent boot MAC: %v", got)
	}
}

func ack(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	// Round-trip through the wire format: what the client really reads.
	m, err = dhcpv4.FromBytes(m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLeaseConfig(t *testing.T) {
	full := ack(t, dhcpv4.WithYourIP(net.IPv4(10, 1, 0, 50)),
		dhcpv4.WithNetmask(net.CIDRMask(20, 32)),
		dhcpv4.WithRouter(net.IPv4(10, 1, 0, 1)),
		dhcpv4.WithDNS(net.IPv4(10, 1, 0, 2), net.IPv4(10, 1, 0, 3)),
		dhcpv4.WithOption(dhcpv4.OptDomainName("lab.example")),
		dhcpv4.WithOption(dhcpv4.OptHostName("node-7")),
		dhcpv4.WithLeaseTime(3600),
		dhcpv4.WithServerIP(net.IPv4(10, 1, 0, 1)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 1, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x23, 0x28})))
	got, err := LeaseConfig(full)
	if err != nil {
		t.Fatal(err)
	}
	want := NetConfig{Addr: netip.MustParsePrefix("10.1.0.50/20"), Gateway: netip.MustParseAddr("10.1.0.1"),
		DNS: []netip.Addr{netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.1.0.3")}, Search: []string{"lab.example"},
		Hostname: "node-7", MTU: 9000, Lease: time.Hour, Server: netip.MustParseAddr("10.1.0.1")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if rc := ResolvConf(got); !strings.Contains(rc, "search lab.example\nnameserver 10.1.0.2\nnameserver 10.1.0.3\n") {
		t.Errorf("resolv.conf:\n%s", rc)
	}

	bare, err := LeaseConfig(ack(t, dhcpv4.WithYourIP(net.IPv4(192, 168, 7, 9))))
	if err != nil {
		t.Fatal(err)
	}
	if bare.Addr != netip.MustParsePrefix("192.168.7.9/24") || bare.Gateway.IsValid() || bare.MTU != 0 || len(bare.DNS) != 0 {
		t.Errorf("a lease with no options: %+v (want the class C mask, no gateway)", bare)
	}
	if _, err := LeaseConfig(ack(t)); err == nil {
		t.Error("a DHCPACK without yiaddr was accepted")
	}
	if _, err := LeaseConfig(ack(t, dhcpv4.WithYourIP(net.IPv4(10, 0, 0, 9)), dhcpv4.WithNetmask(net.IPv4Mask(255, 0, 255, 0)))); err == nil {
		t.Error("a non-contiguous mask was accepted")
	}
}

func TestRenewAfter(t *testing.T) {
	for lease, want := range map[time.Duration]time.Duration{0: 0, time.Hour: 30 * time.Minute, 30 * time.Second: time.Minute,
		time.Duration(^uint32(0)) * time.Second: 0} {
		if got := RenewAfter(lease); got != want {
			t.Errorf("RenewAfter(%s) = %s, want %s", lease, got, want)
		}
	}
}

func TestFormatSyslog(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.FixedZone("x", 3600))
	got := string(FormatSyslog(ts, SyslogSeverity(slog.LevelWarn), "node 7", 1, "level=WARN msg=hi\n"))
	want := "<28>1 2026-01-02T02:04:05.600000Z node_7 herd-osie 1 - - level=WARN msg=hi"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := FormatSyslog(ts, 6, "", 1, strings.Repeat("x", 5000)); len(got) != maxDatagram || !strings.Contains(string(got), " - herd-osie ") {
		t.Errorf("long line: %d bytes", len(got))
	}
	for l, want := range map[slog.Level]int{slog.LevelDebug: 7, slog.LevelInfo: 6, slog.LevelWarn: 4, slog.LevelError: 3} {
		if got := SyslogSeverity(l); got != want {
			t.Errorf("SyslogSeverity(%s) = %d, want %d", l, got, want)
		}
	}
}

func TestSyslogSinkBacklog(t *testing.T) {
	s := &syslogSink{}
	s.send(time.Now(), 6, "before the network")
	var got []string
	s.SetConn(writerFunc(func(p []byte) { got = append(got, string(p)) }), "h")
	s.send(time.Now(), 6, "after")
	if len(got) != 2 || !strings.HasSuffix(got[0], "before the network") || !strings.Contains(got[1], " h herd-osie ") {
		t.Errorf("sent %q", got)
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestChildLevel(t *testing.T) {
	tests := []struct {
		line string
		base slog.Level
		want slog.Level
	}{
		{`time="..." level=info msg="Starting up"`, slog.LevelDebug, slog.LevelDebug},
		{`time="..." level=warning msg="Running in rootless mode"`, slog.LevelDebug, slog.LevelWarn},
		{`time="..." level=error msg=x`, slog.LevelDebug, slog.LevelError},
		{`level="fatal" msg=x`, slog.LevelDebug, slog.LevelError},
		{`plain output`, slog.LevelInfo, slog.LevelInfo},
		{`level=warn`, slog.LevelError, slog.LevelError},
	}
	for _, tt := range tests {
		if got := ChildLevel(tt.line, tt.base); got != tt.want {
			t.Errorf("ChildLevel(%q, %s) = %s, want %s", tt.line, tt.base, got, tt.want)
		}
	}
}

func TestDockerdArgs(t *testing.T) {
	got := DockerdArgs(Config{Registry: "10.1.0.1:5000", Debug: true})
	for _, want := range []string{"--containerd=/run/containerd/containerd.sock", "--host=unix:///run/docker.sock",
		"--storage-driver=overlay2", "--iptables=false", "--bridge=none", "--insecure-registry=10.1.0.1:5000", "--debug"} {
		if !slices.Contains(got, want) {
			t.Errorf("dockerd args lack %s: %v", want, got)
		}
	}
	if slices.ContainsFunc(DockerdArgs(Config{}), func(a string) bool { return strings.HasPrefix(a, "--insecure-registry") }) {
		t.Error("--insecure-registry without a registry")
	}
	if !slices.Contains(DockerdEnv(), "DOCKER_RAMDISK=true") {
		t.Error("runc needs DOCKER_RAMDISK on an initramfs root")
	}
}
