package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
)

const machine1 = `{
  "id": "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94",
  "metadata": {"facility": {"facility_code": "onprem"}, "instance": {"hostname": "machine1"}},
  "network": {
    "interfaces": [
      {
        "dhcp": {
          "arch": "x86_64",
          "hostname": "machine1",
          "ip": {"address": "192.168.1.5", "gateway": "192.168.1.1", "netmask": "255.255.255.248"},
          "mac": "08:00:27:00:00:01",
          "uefi": false
        },
        "netboot": {"allow_pxe": true, "allow_workflow": true}
      },
      {
        "dhcp": {"mac": "08:00:27:00:00:02", "ip": {"address": "10.0.0.7", "netmask": "255.255.255.0"}}
      }
    ]
  }
}`

const machine2 = `{"id":"1c7dd9b6-3b30-4e8f-9e4b-1b1e4a5f8c02","network":{"interfaces":[{"dhcp":{"mac":"08:00:27:00:00:0A"}}]}}`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHardwarePushInvalid(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{
			name:    "bad MAC",
			content: strings.Replace(machine1, "08:00:27:00:00:02", "zz", 1),
			want:    []string{"bad.json: invalid hardware: network.interfaces[1].dhcp.mac"},
		},
		{
			name:    "unknown key",
			content: strings.Replace(machine1, `"uefi"`, `"uefii"`, 1),
			want:    []string{"network.interfaces[0].dhcp.uefii"},
		},
		{
			name:    "several problems, one per line",
			content: `{"id":"nope","network":{"interfaces":[{"dhcp":{"mac":"zz"}}]}}`,
			want:    []string{"bad.json: invalid hardware:\n  id: ", "\n  network.interfaces[0].dhcp.mac: "},
		},
		{name: "not JSON", content: `id: x`, want: []string{"bad.json: invalid hardware"}},
		{name: "empty", content: " \n", want: []string{"bad.json: empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			file := writeFile(t, "bad.json", tt.content)
			r := h.run("", "hardware", "push", "--file", file)
			if r.code != ExitError {
				t.Fatalf("exit %d, want 1; stderr %q", r.code, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "herd: ") {
				t.Errorf("stderr %q", r.stderr)
			}
			msg := strings.ReplaceAll(r.stderr, file, "bad.json")
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr %q does not contain %q", msg, w)
				}
			}
			if len(h.dials()) != 0 {
				t.Fatal("dialled the server for an invalid file")
			}
		})
	}
}

func TestHardwarePushTooLarge(t *testing.T) {
	h := newHarness(t)
	r := h.run(strings.Repeat(" ", spec.MaxHardwareBytes+1), "hardware", "push")
	if r.code != ExitError || !strings.Contains(r.stderr, "herd: stdin: larger than 1048576 bytes") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if len(h.dials()) != 0 {
		t.Fatal("dialled the server")
	}
}

func TestHardwareRoundTrip(t *testing.T) {
	h := newHarness(t)
	// From a file and from stdin.
	if r := h.run("", "hardware", "push", "-f", writeFile(t, "m1.json", machine1)); r.code != 0 || r.stdout != "Hardware 0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94 pushed\n" {
		t.Fatalf("push: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := h.run(machine2, "hardware", "push", "-o", "json"); r.code != 0 || r.stdout != "{}\n" {
		t.Fatalf("push from stdin: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// The CLI sent the record normalized.
	sent := h.srv.last().(*hardware.PushRequest).GetData()
	if mac := sent.GetNetwork().GetInterfaces()[0].GetDhcp().GetMac(); mac != "08:00:27:00:00:0a" {
		t.Errorf("pushed MAC %q, want it lower-cased", mac)
	}

	// Table lookups by id, MAC (any spelling) and IP.
	wantTable := "ID                                    MAC ADDRESS        IP ADDRESS   HOSTNAME\n" +
		"0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94  08:00:27:00:00:01  192.168.1.5  machine1\n" +
		"0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94  08:00:27:00:00:02  10.0.0.7\n"
	for _, args := range [][]string{
		{"hardware", "id", "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"},
		{"hardware", "mac", "08-00-27-00-00-02"},
		{"hardware", "ip", "192.168.1.5"},
	} {
		r := h.run("", args...)
		if r.code != 0 || r.stdout != wantTable {
			t.Errorf("%v: exit %d, stderr %q, stdout\n%s\nwant\n%s", args, r.code, r.stderr, r.stdout, wantTable)
		}
	}
	if got := h.srv.last().(*hardware.GetRequest).GetIp(); got != "192.168.1.5" {
		t.Errorf("ByIP asked for %q", got)
	}

	// JSON output goes back into push unchanged.
	r := h.run("", "hardware", "id", "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "{\n  ") {
		t.Errorf("single record not indented: %q", r.stdout)
	}
	back, err := spec.ParseHardware([]byte(r.stdout))
	if err != nil {
		t.Fatalf("JSON output does not parse back: %v\n%s", err, r.stdout)
	}
	stored, _ := h.srv.find(func(hw *hardware.Hardware) bool { return hw.GetId() == back.GetId() }, "")
	if !proto.Equal(back, stored) {
		t.Errorf("round trip changed the record:\n got %v\nwant %v", back, stored)
	}
	if r := h.run(r.stdout, "hardware", "push"); r.code != 0 {
		t.Fatalf("re-push: exit %d, stderr %q", r.code, r.stderr)
	}

	// Lists.
	r = h.run("", "hardware", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "1c7dd9b6-3b30-4e8f-9e4b-1b1e4a5f8c02  08:00:27:00:00:0a") || strings.Count(r.stdout, "\n") != 4 {
		t.Errorf("list: exit %d, stdout\n%s", r.code, r.stdout)
	}
	r = h.run("", "hardware", "list", "-q")
	if r.stdout != "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94\n1c7dd9b6-3b30-4e8f-9e4b-1b1e4a5f8c02\n" {
		t.Errorf("list -q: %q", r.stdout)
	}
	r = h.run("", "hardware", "list", "-o", "json")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("list -o json: %d lines, want one per record:\n%s", len(lines), r.stdout)
	}
	for _, l := range lines {
		if _, err := spec.ParseHardware([]byte(l)); err != nil {
			t.Errorf("list line does not parse back: %v: %s", err, l)
		}
	}

	// Delete.
	if r := h.run("", "hardware", "delete", "1c7dd9b6-3b30-4e8f-9e4b-1b1e4a5f8c02"); r.code != 0 || r.stdout != "Hardware 1c7dd9b6-3b30-4e8f-9e4b-1b1e4a5f8c02 deleted\n" {
		t.Errorf("delete: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := h.run("", "hardware", "delete", "1c7dd9b6-3b30-4e8f-9e4b-1b1e4a5f8c02"); r.code != 1 || r.stderr != "herd: no hardware with id 1c7dd9b6-3b30-4e8f-9e4b-1b1e4a5f8c02\n" {
		t.Errorf("second delete: exit %d, stderr %q", r.code, r.stderr)
	}
}
