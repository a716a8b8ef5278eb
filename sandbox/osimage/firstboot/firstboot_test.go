package main

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Config
		err        string
	}{
		{"defaults", "console=ttyS0 quiet",
			Config{Root: DefaultRoot, HostnameFile: DefaultHostnameFile, After: "poweroff"}, ""},
		{"all set", `console=ttyS0 root=/dev/vda2 herd.metadata="http://10.1.0.2:50061" herd.hostname_file=/etc/herd/name herd.after=reboot`,
			Config{MetadataURL: "http://10.1.0.2:50061", Root: "/dev/vda2", HostnameFile: "/etc/herd/name", After: "reboot"}, ""},
		{"tinkerbell alias", "packet_base_url=http://10.1.0.3:50061/",
			Config{MetadataURL: "http://10.1.0.3:50061/", Root: DefaultRoot, HostnameFile: DefaultHostnameFile, After: "poweroff"}, ""},
		{"herd name wins over alias, either order", "herd.metadata=http://a:1 packet_base_url=http://b:2",
			Config{MetadataURL: "http://a:1", Root: DefaultRoot, HostnameFile: DefaultHostnameFile, After: "poweroff"}, ""},
		{"quoted value with a space elsewhere", `x="a b" herd.metadata=http://a:1`,
			Config{MetadataURL: "http://a:1", Root: DefaultRoot, HostnameFile: DefaultHostnameFile, After: "poweroff"}, ""},
		{"not a URL", "herd.metadata=10.1.0.2:50061", Config{}, "want an http(s) URL"},
		{"relative hostname file", "herd.hostname_file=etc/hostname", Config{}, "absolute path"},
		{"bad after", "herd.after=halt", Config{}, "want poweroff or reboot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCmdline(tc.line)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHostnameURL(t *testing.T) {
	for _, tc := range []struct {
		base   string
		server net.IP
		want   string
		err    bool
	}{
		{"http://10.1.0.2:50061", nil, "http://10.1.0.2:50061/2009-04-04/meta-data/hostname", false},
		{"http://10.1.0.2:50061/", net.IPv4(10, 9, 9, 9), "http://10.1.0.2:50061/2009-04-04/meta-data/hostname", false},
		{"", net.IPv4(10, 1, 0, 1), "http://10.1.0.1:50061/2009-04-04/meta-data/hostname", false},
		{"", nil, "", true},
		{"", net.IPv4zero, "", true},
	} {
		got, err := HostnameURL(tc.base, tc.server)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("HostnameURL(%q, %v) = %q, %v; want %q (error %v)", tc.base, tc.server, got, err, tc.want, tc.err)
		}
	}
}

func TestParseHostname(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"vm-1\n", "vm-1", ""},
		{"  vm-1.example.com  \r\n", "vm-1.example.com", ""},
		{"\n# written by herd\n\nvm-2\nignored\n", "vm-2", ""},
		{"", "", "empty"},
		{"\n\n", "", "empty"},
		{"two words\n", "", "space"},
		{"bell\x07\n", "", "control"},
		{strings.Repeat("a", 254), "", "over 253"},
	} {
		got, err := ParseHostname(strings.NewReader(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseHostname(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseHostname(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestMarker(t *testing.T) {
	for _, tc := range []struct {
		meta    string
		metaErr error
		file    string
		fileErr error
		want    string
	}{
		{"vm-1", nil, "vm-1", nil, "herd-installed-os: hostname=vm-1 (metadata) file=vm-1"},
		{"vm-1", nil, "herd-unprovisioned", nil, "herd-installed-os: hostname=vm-1 (metadata) file=herd-unprovisioned"},
		{"", errors.New("GET http://x/: 404 Not Found\nno such\tmachine"), "vm-1", nil,
			"herd-installed-os: hostname=? (metadata: GET http://x/: 404 Not Found no such machine) file=vm-1"},
		{"vm-1", nil, "", errors.New("/etc/hostname on /dev/vda2: no such file"),
			"herd-installed-os: hostname=vm-1 (metadata) file=? (/etc/hostname on /dev/vda2: no such file)"},
	} {
		if got := Marker(tc.meta, tc.metaErr, tc.file, tc.fileErr); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// superblock makes the first 2048 bytes of an ext file system.
func superblock(label string, magic uint16) []byte {
	b := make([]byte, 2048)
	binary.LittleEndian.PutUint16(b[1024+0x38:], magic)
	copy(b[1024+0x78:1024+0x78+16], label)
	return b
}

func TestExtLabel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		head  []byte
		label string
		ok    bool
	}{
		{"ext4 with label", superblock("herd-root", extMagic), "herd-root", true},
		{"16-byte label, no NUL", superblock("0123456789abcdef", extMagic), "0123456789abcdef", true},
		{"no label", superblock("", extMagic), "", true},
		{"FAT or anything else", superblock("herd-root", 0), "", false},
		{"short read", make([]byte, 512), "", false},
	} {
		l, ok := ExtLabel(tc.head)
		if l != tc.label || ok != tc.ok {
			t.Errorf("%s: got %q %v, want %q %v", tc.name, l, ok, tc.label, tc.ok)
		}
	}
}

func TestFindRoot(t *testing.T) {
	heads := map[string][]byte{
		"/dev/vda":  make([]byte, 2048), // the MBR
		"/dev/vda1": superblock("", 0),  // FAT
		"/dev/vda2": superblock("herd-root", extMagic),
		"/dev/vdb1": superblock("other", extMagic),
	}
	devs := []string{"/dev/sr0", "/dev/vda", "/dev/vda1", "/dev/vda2", "/dev/vdb1"}
	head := func(d string) ([]byte, error) {
		if b, ok := heads[d]; ok {
			return b, nil
		}
		return nil, errors.New("no medium")
	}
	for _, tc := range []struct{ spec, want, err string }{
		{"LABEL=herd-root", "/dev/vda2", ""},
		{"LABEL=other", "/dev/vdb1", ""},
		{"/dev/vda2", "/dev/vda2", ""},
		{"/dev/sda2", "", "no such device yet"},
		{"LABEL=missing", "", "no ext file system with that label"},
		{"UUID=1234", "", "want /dev/NAME or LABEL=name"},
		{"LABEL=", "", "want /dev/NAME or LABEL=name"},
	} {
		got, err := FindRoot(tc.spec, devs, head)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("FindRoot(%q) error %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("FindRoot(%q) = %q, %v; want %q", tc.spec, got, err, tc.want)
		}
	}
}

func TestParseModuleList(t *testing.T) {
	in := `# virtio_blk with its dependencies
/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko
/lib/modules/6.1.0-56-amd64/kernel/drivers/block/virtio_blk.ko

/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko
/lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko
`
	got, err := ParseModuleList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko",
		"/lib/modules/6.1.0-56-amd64/kernel/drivers/block/virtio_blk.ko",
		"/lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := ParseModuleList(strings.NewReader("virtio_net\n")); err == nil {
		t.Fatal("a module name instead of a path was accepted")
	}
}

func TestLeaseConfig(t *testing.T) {
	// QEMU user networking's answer: 10.0.2.15/24, router and DNS 10.0.2.2/.3.
	ack, err := dhcpv4.New(
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithServerIP(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithDNS(net.IPv4(10, 0, 2, 3)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 2))),
	)
	if err != nil {
		t.Fatal(err)
	}
	// Through the wire format, as the client sees it.
	ack, err = dhcpv4.FromBytes(ack.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	c, err := LeaseConfig(ack)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != netip.MustParsePrefix("10.0.2.15/24") || c.Gateway != netip.MustParseAddr("10.0.2.2") ||
		!c.Server.Equal(net.IPv4(10, 0, 2, 2)) || len(c.DNS) != 1 || c.DNS[0] != netip.MustParseAddr("10.0.2.3") {
		t.Fatalf("got %+v", c)
	}
	if got := ResolvConf(c); got != "nameserver 10.0.2.3\n" {
		t.Fatalf("resolv.conf %q", got)
	}

	// No mask, no router, no option 54: classful /8, siaddr as the server.
	bare, _ := dhcpv4.New(dhcpv4.WithYourIP(net.IPv4(10, 7, 0, 9)), dhcpv4.WithServerIP(net.IPv4(10, 7, 0, 1)))
	c, err = LeaseConfig(bare)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != netip.MustParsePrefix("10.7.0.9/8") || c.Gateway.IsValid() || !c.Server.Equal(net.IPv4(10, 7, 0, 1)) {
		t.Fatalf("bare lease: got %+v", c)
	}

	none, _ := dhcpv4.New()
	if _, err := LeaseConfig(none); err == nil {
		t.Fatal("a lease without yiaddr was accepted")
	}
}
