package spec

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/proto/hardware"
)

// FuzzParseHardware must never panic; what it accepts must survive
// MarshalHardware and parse back the same.
func FuzzParseHardware(f *testing.F) {
	for _, seed := range []string{
		goodHardware,
		minimalHardware,
		`{"metadata":"{\"a\":[1,{\"b\":null}]}",` + minimalHardware[1:],
		`{"id": "x",`,
		`{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[null,{},{"dhcp":null},{"dhcp":{"mac":"aa-bb-cc-dd-ee-ff","ip":{"address":"::1","netmask":"1"}}}]}}`,
		`{"metadata":{"a":{"a":{"a":[[[[]]]]}}},"version":-1}`,
		`{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[{"dhcp":{"mac":"52:54:00:12:34:56","time_servers":["0.pool.ntp.org","NTP.Example","10.1.0.300","fd00::123","a..b",""]}}]}}`,
		`[1, "x", true, null, 1e400]`,
		"\"\xff\"",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		hw, err := ParseHardware(b)
		if err != nil {
			return
		}
		NormalizeHardware(hw)
		HardwareAddresses(hw)
		out, err := MarshalHardware(hw)
		if err != nil {
			t.Fatalf("MarshalHardware of an accepted record: %v", err)
		}
		again, err := ParseHardware(out)
		if err != nil {
			t.Fatalf("marshalled record does not parse: %v\n%s", err, out)
		}
		if !proto.Equal(hw, again) {
			t.Fatalf("round trip changed the record:\n%v\n%v", hw, again)
		}
	})
}

// FuzzValidateTemplate must never panic, nor must rendering what it
// accepts.
func FuzzValidateTemplate(f *testing.F) {
	for _, seed := range []string{
		goodTemplate,
		oneAction("name: a\n        image: alpine"),
		"toggle_netboot: false\n" + oneAction("name: a\n        image: alpine"),
		"version: \"0.1\"\nname: x\ntasks: &t\n  - *t\n",
		"a: &a [*a]",
		"{{if}}",
		"version: \"0.1\"\nname: x\ntasks:\n  - <<: [*x]\n",
		"tasks:\n  - name: a\n    actions:\n      - <<: {name: b}\n        image: \"[::1]:1/a@sha256:\"\n",
		"--- a\n--- b\n",
		"\t\x00",
		"",
	} {
		f.Add(seed)
	}
	devices := map[string]string{"device_1": "08:00:27:00:00:01", "device_2": "10.1.0.11"}
	f.Fuzz(func(t *testing.T, raw string) {
		if ValidateTemplate(raw) != nil {
			return
		}
		_, _ = TemplateName(raw)
		tmpl, _, err := RenderTemplate(raw, devices, nil)
		if err != nil {
			return
		}
		if _, err := tmpl.Actions(func(w string) (string, error) { return w, nil }); err != nil {
			t.Fatalf("Actions of a rendered template: %v", err)
		}
	})
}

// hostileTemplate puts hardware values where templates put them: an
// environment value, a command argument, a volume, the worker.
const hostileTemplate = `version: "0.1"
name: hostile
tasks:
  - name: os
    worker: "{{.device_1}}"
    environment:
      HOST: "{{.hardware.device_1.metadata.instance.hostname}}"
    actions:
      - name: write
        image: writefile
        command: ["write", "{{.hardware.device_1.network.interfaces}}", '{{index .hardware.device_1.metadata.instance.tags 0}}']
        environment:
          TAG: {{index .hardware.device_1.metadata.instance.tags 0}}
      - name: "{{.hardware.device_1.metadata.instance.hostname}}-done"
        image: alpine
        volumes:
          - /data/{{.hardware.device_1.metadata.instance.hostname}}:/data
`

// FuzzRenderTemplate: hardware values are the operator's inventory, often
// synced from elsewhere, and land raw in the YAML (as in Tinkerbell v0.6):
// whatever a record that passes ParseHardware holds, rendering never
// panics, and either refuses with a problem named or gives a template
// that is whole (it parses, its actions resolve, and it stays within the
// size bound).
func FuzzRenderTemplate(f *testing.F) {
	for _, seed := range []struct{ hostname, tag string }{
		{"node-1", "rack-a"},
		{"x\"\n      - name: evil\n        image: evil\n#", "ok"},
		{"{{.device_1}}", "{{template \"x\"}}"},
		{"", "\x00"},
		{strings.Repeat("a", 70000), "b"},
		{"'", `"`},
	} {
		f.Add(seed.hostname, seed.tag)
	}
	devices := map[string]string{"device_1": "08:00:27:00:00:01"}
	f.Fuzz(func(t *testing.T, hostname, tag string) {
		meta, err := json.Marshal(map[string]any{"instance": map[string]any{"hostname": hostname, "tags": []string{tag}}})
		if err != nil {
			return
		}
		rec := `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","metadata":` + string(meta) +
			`,"network":{"interfaces":[{"dhcp":{"mac":"08:00:27:00:00:01"}}]}}`
		hw, err := ParseHardware([]byte(rec))
		if err != nil {
			return // the server never stores it
		}
		tmpl, text, err := RenderTemplate(hostileTemplate, devices, map[string]*hardware.Hardware{"device_1": hw})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused without a reason")
			}
			return
		}
		if len(text) > MaxTemplateBytes {
			t.Fatalf("rendered %d bytes, past the bound", len(text))
		}
		if _, err := tmpl.Actions(func(w string) (string, error) { return w, nil }); err != nil {
			t.Fatalf("Actions of a rendered template: %v", err)
		}
	})
}

// TestHostileTemplateRenders: FuzzRenderTemplate's template renders with
// plain values, so the fuzzer explores rendering, not a refusal.
func TestHostileTemplateRenders(t *testing.T) {
	hw, err := ParseHardware([]byte(`{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","metadata":{"instance":{"hostname":"node-1","tags":["rack-a"]}},` +
		`"network":{"interfaces":[{"dhcp":{"mac":"08:00:27:00:00:01"}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, _, err := RenderTemplate(hostileTemplate, map[string]string{"device_1": "08:00:27:00:00:01"}, map[string]*hardware.Hardware{"device_1": hw})
	if err != nil {
		t.Fatal(err)
	}
	acts, err := tmpl.Actions(func(w string) (string, error) { return w, nil })
	if err != nil || len(acts) != 2 || acts[1].GetName() != "node-1-done" || acts[0].GetEnvironment()[1] != "TAG=rack-a" {
		t.Fatalf("actions %v, %v", acts, err)
	}
}
