package spec

import (
	"testing"

	"google.golang.org/protobuf/proto"
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
