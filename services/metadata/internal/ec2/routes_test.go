package ec2

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/herd-metal/herd/proto/hardware"
)

const fullDoc = `{
  "facility": {"facility_code": "onprem-1", "plan_slug": "c3.small.x86"},
  "instance": {
    "id": "inst-1",
    "hostname": "node-1",
    "ip_addresses": [
      {"address": "10.1.0.11", "address_family": 4, "public": false, "management": true},
      {"address": "203.0.113.7", "address_family": 4, "public": true, "management": true},
      {"address": "2001:db8::7", "address_family": 6, "public": true, "management": true}
    ],
    "ssh_keys": ["ssh-ed25519 AAAAC3Nza alice@example", "ssh-rsa AAAAB3Nza"],
    "tags": ["web", "blue"],
    "operating_system": {"slug": "debian_12", "distro": "debian", "version": "12"},
    "userdata": "#cloud-config\nhostname: node-1\n"
  },
  "state": ""
}`

func machine(id, ip, doc string) *hardware.Hardware {
	return &hardware.Hardware{
		Id:       id,
		Metadata: doc,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: "08:00:27:00:00:01", Hostname: "dhcp-name", Ip: &hardware.Hardware_DHCP_IP{Address: ip}},
		}}},
	}
}

func TestPrepareTree(t *testing.T) {
	p := NewTree().Prepare(machine("hw-1", "10.1.0.11", fullDoc))
	tests := []struct {
		path string
		dir  bool
		want string // "" with missing
		miss bool
	}{
		{path: "", dir: true, want: "meta-data/\nuser-data"},
		{path: "meta-data", dir: true, want: "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\noperating-system/\nplacement/\nplan\npublic-ipv4\npublic-ipv6\npublic-keys/\ntags"},
		{path: "meta-data", want: "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\noperating-system/\nplacement/\nplan\npublic-ipv4\npublic-ipv6\npublic-keys/\ntags"},
		{path: "meta-data/instance-id", want: "inst-1"},
		{path: "meta-data/hostname", want: "node-1"},
		{path: "meta-data/local-hostname", want: "node-1"},
		{path: "meta-data/local-ipv4", want: "10.1.0.11"},
		{path: "meta-data/public-ipv4", want: "203.0.113.7"},
		{path: "meta-data/public-ipv6", want: "2001:db8::7"},
		{path: "meta-data/public-keys", dir: true, want: "0=alice@example\n1=key-1"},
		{path: "meta-data/public-keys/0", dir: true, want: "openssh-key"},
		{path: "meta-data/public-keys/0/openssh-key", want: "ssh-ed25519 AAAAC3Nza alice@example"},
		{path: "meta-data/public-keys/1/openssh-key", want: "ssh-rsa AAAAB3Nza"},
		{path: "meta-data/placement", dir: true, want: "availability-zone"},
		{path: "meta-data/placement/availability-zone", want: "onprem-1"},
		{path: "meta-data/plan", want: "c3.small.x86"},
		{path: "meta-data/tags", want: "web\nblue"},
		{path: "meta-data/operating-system", dir: true, want: "distro\nslug\nversion"},
		{path: "meta-data/operating-system/slug", want: "debian_12"},
		{path: "meta-data/operating-system/distro", want: "debian"},
		{path: "meta-data/operating-system/version", want: "12"},
		{path: "user-data", want: "#cloud-config\nhostname: node-1\n"},
		{path: "meta-data/hostname", dir: true, miss: true}, // a file is no directory
		{path: "meta-data/public-keys/2/openssh-key", miss: true},
		{path: "meta-data/nope", miss: true},
		{path: "meta-data/", miss: true},
		{path: "meta-data//hostname", miss: true},
	}
	for _, tt := range tests {
		r, ok := p.Lookup(tt.path, tt.dir)
		if tt.miss {
			if ok {
				t.Errorf("Lookup(%q, %v) = %q, want missing", tt.path, tt.dir, r.Body)
			}
			continue
		}
		if !ok {
			t.Errorf("Lookup(%q, %v) missing, want %q", tt.path, tt.dir, tt.want)
			continue
		}
		if string(r.Body) != tt.want {
			t.Errorf("Lookup(%q) = %q, want %q", tt.path, r.Body, tt.want)
		}
		if r.ContentType != TextPlain || r.Dir != tt.dir && tt.path != "meta-data" {
			t.Errorf("Lookup(%q) Content-Type %q, Dir %v", tt.path, r.ContentType, r.Dir)
		}
		if !slices.Contains(Labels(), r.Label) {
			t.Errorf("Lookup(%q) label %q is not in Labels()", tt.path, r.Label)
		}
	}
	if got := string(p.Root().Body); got != "2009-04-04\nlatest" {
		t.Errorf("root = %q", got)
	}
	if got := string(p.Metadata().Body); got != strings.TrimSpace(fullDoc) {
		t.Errorf("metadata = %q", got)
	}
}

// Fields the document lacks are absent (unlisted, 404), and the record's
// own fields stand in where they can.
func TestPrepareFallbacks(t *testing.T) {
	tests := []struct {
		name, doc string
		want      map[string]string // path -> body; "-" means absent
	}{
		{"no metadata", "", map[string]string{
			"":                      "meta-data/",
			"meta-data":             "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4",
			"meta-data/instance-id": "hw-1",
			"meta-data/hostname":    "dhcp-name",
			"meta-data/local-ipv4":  "10.1.0.11",
			"meta-data/public-keys": "-",
			"meta-data/public-ipv4": "-",
			"user-data":             "-",
			"meta-data/placement":   "-",
			"meta-data/tags":        "-",
			"meta-data/plan":        "-",
			"meta-data/public-ipv6": "-",
		}},
		{"not an object", `["x"]`, map[string]string{"meta-data/instance-id": "hw-1"}},
		{"wrong types", `{"instance": {"hostname": 7, "ssh_keys": "k", "tags": [1, "a"], "ip_addresses": "x"}}`, map[string]string{
			"meta-data/hostname": "dhcp-name", "meta-data/public-keys": "-", "meta-data/tags": "a",
		}},
		{"older spellings", `{"plan_slug": "p1", "userdata": "#!/bin/sh", "instance": {"operating_system_version": {"os_slug": "ubuntu_18_04"}, "network": {"addresses": [{"address": "192.0.2.9", "address_family": 4, "public": true}]}}}`, map[string]string{
			"meta-data/plan": "p1", "user-data": "#!/bin/sh", "meta-data/operating-system/slug": "ubuntu_18_04", "meta-data/public-ipv4": "192.0.2.9",
		}},
		{"family disagrees with address", `{"instance": {"ip_addresses": [{"address": "192.0.2.9", "address_family": 6, "public": true}]}}`, map[string]string{
			"meta-data/public-ipv4": "-", "meta-data/public-ipv6": "-",
		}},
		{"management address wins", `{"instance": {"ip_addresses": [{"address": "10.9.9.9", "public": false}, {"address": "10.1.0.12", "public": false, "management": true}]}}`, map[string]string{
			"meta-data/local-ipv4": "10.1.0.12",
		}},
	}
	for _, tt := range tests {
		p := NewTree().Prepare(machine("hw-1", "10.1.0.11", tt.doc))
		for path, want := range tt.want {
			r, ok := p.Lookup(path, false)
			switch {
			case want == "-" && ok:
				t.Errorf("%s: %q = %q, want absent", tt.name, path, r.Body)
			case want != "-" && !ok:
				t.Errorf("%s: %q absent, want %q", tt.name, path, want)
			case want != "-" && string(r.Body) != want:
				t.Errorf("%s: %q = %q, want %q", tt.name, path, r.Body, want)
			}
		}
	}
}

func TestAddresses(t *testing.T) {
	got := Addresses(machine("hw-1", "10.1.0.11", fullDoc))
	want := []netip.Addr{netip.MustParseAddr("10.1.0.11"), netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")}
	if !slices.Equal(got, want) {
		t.Errorf("Addresses = %v, want %v", got, want)
	}
}

func TestLabelsBounded(t *testing.T) {
	// A machine with many keys adds no labels.
	doc := `{"instance": {"ssh_keys": [` + strings.Repeat(`"ssh-ed25519 AAAA x",`, 50) + `"ssh-ed25519 AAAA y"]}}`
	p := NewTree().Prepare(machine("hw-1", "10.1.0.11", doc))
	if r, _ := p.Lookup("meta-data/public-keys", true); !strings.HasPrefix(string(r.Body), "0=x\n1=key-1\n2=key-2\n") {
		t.Errorf("duplicate key names: listing %q", r.Body)
	}
	labels := Labels()
	for path := range shared.paths {
		for _, dir := range []bool{false, true} {
			if r, ok := p.Lookup(path, dir); ok && !slices.Contains(labels, r.Label) {
				t.Errorf("%q: label %q not in Labels()", path, r.Label)
			}
		}
	}
	if r, ok := p.Lookup("meta-data/public-keys/50/openssh-key", false); !ok || !slices.Contains(labels, r.Label) {
		t.Errorf("key 50: %v %q", ok, r.Label)
	}
}

func TestKeyPaths(t *testing.T) {
	doc := `{"instance": {"ssh_keys": [` + strings.Repeat(`"ssh-ed25519 AAAA x",`, 11) + `"ssh-ed25519 AAAA y"]}}`
	p := NewTree().Prepare(machine("hw-1", "10.1.0.11", doc))
	for _, tt := range []struct {
		path string
		dir  bool
		ok   bool
	}{
		{"meta-data/public-keys/0", false, true},
		{"meta-data/public-keys/0", true, true},
		{"meta-data/public-keys/11/openssh-key", false, true},
		{"meta-data/public-keys/12/openssh-key", false, false},
		{"meta-data/public-keys/01/openssh-key", false, false},
		{"meta-data/public-keys/+1/openssh-key", false, false},
		{"meta-data/public-keys/-0/openssh-key", false, false},
		{"meta-data/public-keys/1/openssh-key", true, false},
		{"meta-data/public-keys/1/other", false, false},
		{"meta-data/public-keys/1/openssh-key/x", false, false},
		{"meta-data/public-keys/", false, false},
		{"meta-data/public-keysx/0", false, false},
		{"meta-data/public-keys/99999999999999999999/openssh-key", false, false},
	} {
		if _, ok := p.Lookup(tt.path, tt.dir); ok != tt.ok {
			t.Errorf("Lookup(%q, %v) ok = %v, want %v", tt.path, tt.dir, ok, tt.ok)
		}
	}
	if r, _ := p.Lookup("meta-data/public-keys/11/openssh-key", false); r.Body != "ssh-ed25519 AAAA y" {
		t.Errorf("key 11 = %q", r.Body)
	}
}

// Machines with the same fields present share their listings; a machine
// holds only its own values.
func TestSharedShapes(t *testing.T) {
	tree := NewTree()
	a := tree.Prepare(machine("hw-1", "10.1.0.11", fullDoc))
	b := tree.Prepare(machine("hw-2", "10.1.0.12", strings.ReplaceAll(fullDoc, "node-1", "node-2")))
	c := tree.Prepare(machine("hw-3", "10.1.0.13", ""))
	if a.shape != b.shape || a.shape == c.shape || len(tree.shapes) != 2 {
		t.Errorf("shapes: a %p b %p c %p, %d interned", a.shape, b.shape, c.shape, len(tree.shapes))
	}
	if r, _ := b.Lookup("meta-data/hostname", false); r.Body != "node-2" {
		t.Errorf("b's hostname %q", r.Body)
	}
	// Values the document spells as answered point into it, no copies;
	// the others (joined tags) follow it.
	doc := a.Metadata().Body
	for path, inDoc := range map[string]bool{"meta-data/hostname": true, "meta-data/instance-id": true, "meta-data/public-keys/0/openssh-key": true, "meta-data/tags": false} {
		r, ok := a.Lookup(path, false)
		if !ok || within(r.Body, doc) != inDoc {
			t.Errorf("%s: %q (found %v) within the document: %v, want %v", path, r.Body, ok, within(r.Body, doc), inDoc)
		}
	}
}

// within says whether s's bytes are part of outer's.
func within(s, outer string) bool {
	p, o := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(outer)))
	return p >= o && p+uintptr(len(s)) <= o+uintptr(len(outer))
}

func TestLookupAllocs(t *testing.T) {
	p := NewTree().Prepare(machine("hw-1", "10.1.0.11", fullDoc))
	paths := []string{"meta-data/hostname", "meta-data", "", "meta-data/public-keys/1/openssh-key", "user-data", "meta-data/nope"}
	if n := testing.AllocsPerRun(100, func() {
		for _, path := range paths {
			p.Lookup(path, false)
		}
		p.Metadata()
	}); n > 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
}

// The machine's BMC (where it answers, the credential it is logged into
// with) is the operator's, not the tenant's: no metadata path shows it.
func TestBMCNotServed(t *testing.T) {
	hw := machine("hw-1", "10.1.0.11", fullDoc)
	hw.Bmc = &hardware.Hardware_BMC{Address: "10.250.0.9", Protocol: "ipmi", Credential: "rack-7-admin"}
	p := NewTree().Prepare(hw)
	seen := 0
	var walk func(path string)
	walk = func(path string) {
		r, ok := p.Lookup(path, true)
		if !ok {
			r, ok = p.Lookup(path, false)
		}
		if !ok {
			t.Fatalf("listed path %q is missing", path)
		}
		seen++
		if body := string(r.Body); strings.Contains(body, "10.250.0.9") || strings.Contains(body, "rack-7-admin") {
			t.Errorf("%q shows the BMC: %q", path, body)
		}
		if !r.Dir {
			return
		}
		for _, line := range strings.Split(string(r.Body), "\n") {
			name, _, _ := strings.Cut(strings.TrimSuffix(line, "/"), "=")
			if name == "" {
				continue
			}
			if path == "" {
				walk(name)
			} else {
				walk(path + "/" + name)
			}
		}
	}
	walk("")
	if seen < 20 {
		t.Errorf("walked %d paths, want the whole tree (20 or more)", seen)
	}
	for _, r := range []Response{p.Root(), p.Metadata()} {
		if strings.Contains(string(r.Body), "10.250.0.9") || strings.Contains(string(r.Body), "rack-7-admin") {
			t.Errorf("document shows the BMC: %q", r.Body)
		}
	}
}
