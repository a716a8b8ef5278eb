package spec

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
	"google.golang.org/protobuf/proto"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// goodTemplate is in the shape of Tinkerbell v0.6's example templates.
const goodTemplate = `version: "0.1"
name: ubuntu_provisioning
global_timeout: 6000
tasks:
  - name: "os-installation"
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev
      - /dev/console:/dev/console
      - /lib/firmware:/lib/firmware:ro
    environment:
      MIRROR_HOST: 10.1.0.2
      DEBUG: "false"
    actions:
      - name: "disk-wipe"
        image: disk-wipe
        timeout: 90
      - name: "disk-partition"
        image: quay.io/tinkerbell/disk-partition:v1.2
        timeout: 600
        environment:
          MIRROR_HOST: 10.1.0.3
          MIRROR_PORT: 8080
        volumes:
          - /lib/firmware:/lib/firmware:rw
          - /statedir:/statedir
      - name: "install-root-fs"
        image: localhost:5000/tools/install-root-fs@` + digest + `
        timeout: 0
        command: ["sh", "-c", "echo {{.hardware.device_1.metadata.instance.hostname}}"]
        on-timeout: ["echo", "timeout"]
        on-failure: ["echo", "failure"]
        pid: host
  - name: second
    worker: "{{.device_2}}"
    actions:
      - name: "hello"
        image: hello-world
`

// tpl returns goodTemplate with one substitution.
func tpl(old, new string) string {
	if !strings.Contains(goodTemplate, old) {
		panic("test fixture does not contain " + old)
	}
	return strings.Replace(goodTemplate, old, new, 1)
}

// oneAction is a small template around one action's YAML lines (indented
// by eight spaces after the first).
func oneAction(action string) string {
	return `version: "0.1"
name: t
tasks:
  - name: task
    worker: "{{.device_1}}"
    actions:
      - ` + action + "\n"
}

func TestValidateTemplateBad(t *testing.T) {
	const a0 = "tasks[0].actions[0]"
	tests := []struct {
		name  string
		in    string
		field string
		want  string
	}{
		{"not YAML", "version: \"0.1\"\n  name: x\n", "template", "is not valid YAML: did not find expected key (line 2)"},
		{"empty", "", "template", "is empty"},
		{"only a comment", "# nothing\n", "template", "is empty"},
		{"two documents", goodTemplate + "---\n" + goodTemplate, "template", "more than one YAML document"},
		{"broken second document", goodTemplate + "---\n: [\n", "template", "is not valid YAML"},
		{"a list", "- a\n- b\n", "template", "must be a mapping"},
		{"too large", goodTemplate + "#" + strings.Repeat("x", MaxTemplateBytes), "template", "the limit is 1048576"},
		{"bad Go template", tpl(`"{{.device_1}}"`, `"{{.device_1"`), "template", "is not a valid Go template: bad character U+0022 '\"' (line 6)"},
		{"unknown top key", tpl("global_timeout:", "global-timeout:"), "global-timeout", `did you mean "global_timeout"`},
		{"repeated top key", tpl("name: ubuntu_provisioning\n", "name: ubuntu_provisioning\nname: again\n"), "name", "appears twice in the same mapping (first at line 2) (line 3)"},
		{"version missing", tpl("version: \"0.1\"\n", ""), "version", "is required"},
		{"version wrong", tpl(`version: "0.1"`, `version: "0.2"`), "version", `"0.2" is not a supported version`},
		{"version 0.10", tpl(`version: "0.1"`, `version: 0.10`), "version", `"0.10" is not a supported version`},
		{"name missing", tpl("name: ubuntu_provisioning\n", ""), "name", "is required"},
		{"name too long", tpl("name: ubuntu_provisioning", "name: "+strings.Repeat("é", 201)), "name", "is 201 characters long; the limit is 200"},
		{"name control character", tpl("name: ubuntu_provisioning", `name: "a\tb"`), "name", "control character"},
		{"name a list", tpl("name: ubuntu_provisioning", "name: [a]"), "name", "must be a string, not a list"},
		{"global timeout negative", tpl("global_timeout: 6000", "global_timeout: -1"), "global_timeout", "negative"},
		{"global timeout words", tpl("global_timeout: 6000", "global_timeout: 1h"), "global_timeout", `whole number of seconds, not "1h"`},
		{"global timeout too long", tpl("global_timeout: 6000", "global_timeout: 99999999999"), "global_timeout", "more than the limit"},
		{"tasks missing", "version: \"0.1\"\nname: x\n", "tasks", "at least one task"},
		{"tasks empty", "version: \"0.1\"\nname: x\ntasks: []\n", "tasks", "at least one task"},
		{"tasks a mapping", "version: \"0.1\"\nname: x\ntasks: {a: b}\n", "tasks", "must be a list of tasks"},
		{"task null", "version: \"0.1\"\nname: x\ntasks:\n  -\n", "tasks[0]", "is empty"},
		{"task a string", "version: \"0.1\"\nname: x\ntasks:\n  - a\n", "tasks[0]", "must be a mapping"},
		{"task name missing", tpl(`- name: "os-installation"`+"\n    worker", "- worker"), "tasks[0].name", "is required"},
		{"task names repeated", tpl("- name: second", "- name: os-installation"), "tasks[1].name", `"os-installation" is already the name of tasks[0]`},
		{"unknown task key", tpl("    actions:\n      - name: \"disk-wipe\"", "    actons:\n      - name: \"disk-wipe\""), "tasks[0].actons", `did you mean "actions"`},
		{"worker missing", tpl(`    worker: "{{.device_2}}"`+"\n", ""), "tasks[1].worker", "is required"},
		{"worker not an address", tpl(`"{{.device_2}}"`, `node-2`), "tasks[1].worker", `"node-2" is not a MAC or IP address`},
		{"worker unquoted expression", tpl(`"{{.device_2}}"`, `{{.device_2}}`), "tasks[1].worker", "quote template expressions"},
		{"volumes not a list", tpl("    volumes:\n      - /dev:/dev\n", "    volumes: /dev:/dev\n"), "tasks[0].volumes", "must be a list of strings, not a string"},
		{"volume without destination", tpl("- /dev:/dev\n", "- /dev\n"), "tasks[0].volumes[0]", "source:destination"},
		{"volume relative destination", tpl("- /dev:/dev\n", "- /dev:dev\n"), "tasks[0].volumes[0]", "destination must be an absolute path"},
		{"volume onto root", tpl("- /dev:/dev\n", "- /dev:/\n"), "tasks[0].volumes[0]", "container's root"},
		{"volume bad mode", tpl("/lib/firmware:/lib/firmware:ro", "/lib/firmware:/lib/firmware:rx"), "tasks[0].volumes[2]", `mode "rx" is not ro or rw`},
		{"volume bad source", tpl("- /dev:/dev\n", "- ./dev:/dev\n"), "tasks[0].volumes[0]", "absolute host path or a volume name"},
		{"v0.6 sample's relative volume (issue 15 item 1: refused)", tpl("- /dev:/dev\n", "- ./host-path:/container-path\n"), "tasks[0].volumes[0]",
			`"./host-path:/container-path": the source must be an absolute host path or a volume name`},
		{"volume destination twice", tpl("- /dev/console:/dev/console", "- /tmp/dev:/dev/"), "tasks[0].volumes[1]", "mounts /dev again (already tasks[0].volumes[0])"},
		{"environment a list", tpl("    environment:\n      MIRROR_HOST: 10.1.0.2\n      DEBUG: \"false\"\n", "    environment:\n      - MIRROR_HOST=10.1.0.2\n"), "tasks[0].environment", "must be a mapping of NAME: value"},
		{"environment key with =", tpl("DEBUG:", `"A=B":`), `tasks[0].environment["A=B"]`, `no "="`},
		{"environment key repeated", tpl("DEBUG:", "MIRROR_HOST:"), "tasks[0].environment.MIRROR_HOST", "appears twice"},
		{"environment value a mapping", tpl(`DEBUG: "false"`, "DEBUG: {a: b}"), "tasks[0].environment.DEBUG", "must be a string, not a mapping"},
		{"action env key starts with digit", tpl("MIRROR_PORT:", "9PORT:"), "tasks[0].actions[1].environment.9PORT", "starts with a digit"},
		{"actions missing", tpl("    actions:\n      - name: \"hello\"\n        image: hello-world\n", ""), "tasks[1].actions", "at least one action"},
		{"actions empty", tpl("    actions:\n      - name: \"hello\"\n        image: hello-world\n", "    actions: []\n"), "tasks[1].actions", "at least one action"},
		{"action null", tpl("    actions:\n      - name: \"hello\"\n        image: hello-world\n", "    actions:\n      -\n"), "tasks[1].actions[0]", "is empty"},
		{"action name missing", oneAction("image: alpine"), a0 + ".name", "is required"},
		{"action name too long", oneAction("name: " + strings.Repeat("a", 201) + "\n        image: alpine"), a0 + ".name", "the limit is 200"},
		{"action names repeated", tpl(`- name: "disk-partition"`, `- name: "disk-wipe"`), "tasks[0].actions[1].name", `"disk-wipe" is already the name of tasks[0].actions[0]`},
		{"unknown action key", oneAction("name: a\n        image: alpine\n        on_timeout: [x]"), a0 + ".on_timeout", `did you mean "on-timeout"`},
		{"image missing", oneAction("name: a"), a0 + ".image", "is required"},
		{"image upper case", oneAction("name: a\n        image: Ubuntu"), a0 + ".image", `path component "Ubuntu" must be lower case`},
		{"image bad digest", oneAction("name: a\n        image: alpine@sha256:abc"), a0 + ".image", "64 lower-case hex digits"},
		{"image empty tag", oneAction("name: a\n        image: 'alpine:'"), a0 + ".image", "tag"},
		{"image bad port", oneAction("name: a\n        image: registry:99999/alpine"), a0 + ".image", "port"},
		{"image double slash", oneAction("name: a\n        image: quay.io//alpine"), a0 + ".image", "empty path component"},
		{"timeout negative", oneAction("name: a\n        image: alpine\n        timeout: -5"), a0 + ".timeout", "-5 is negative"},
		{"timeout quoted", oneAction("name: a\n        image: alpine\n        timeout: \"90\""), a0 + ".timeout", `whole number of seconds, not "90"`},
		{"timeout fraction", oneAction("name: a\n        image: alpine\n        timeout: 1.5"), a0 + ".timeout", "whole number"},
		{"timeout too long", oneAction("name: a\n        image: alpine\n        timeout: 9223372036854775807"), a0 + ".timeout", "more than the limit"},
		{"command a string", oneAction("name: a\n        image: alpine\n        command: echo hi"), a0 + ".command", "must be a list of strings, not a string"},
		{"command item a mapping", oneAction("name: a\n        image: alpine\n        command: [{a: b}]"), a0 + ".command[0]", "must be a string, not a mapping"},
		{"command NUL", oneAction("name: a\n        image: alpine\n        command: [\"a\\0b\"]"), a0 + ".command[0]", "NUL"},
		{"on-timeout a mapping", oneAction("name: a\n        image: alpine\n        on-timeout: {a: b}"), a0 + ".on-timeout", "must be a list of strings"},
		{"on-failure a number", oneAction("name: a\n        image: alpine\n        on-failure: 5"), a0 + ".on-failure", "not a number"},
		{"pid other", oneAction("name: a\n        image: alpine\n        pid: container"), a0 + ".pid", `"container" is not supported`},
		{"action volume bad", oneAction("name: a\n        image: alpine\n        volumes: [/a:/b:/c:/d]"), a0 + ".volumes[0]", "source:destination"},
		{"alias cycle", "version: \"0.1\"\nname: x\ntasks: &t\n  - *t\n", "template", ""},
		{"alias bomb", aliasBomb(), "template", "YAML nodes once its aliases are expanded"},
		{"range over a huge literal", tpl("name: ubuntu_provisioning", "name: ubuntu_provisioning # {{range 1000000000}}{{end}}"), "template", "{{range 1000000000}} (nested) loops more than 100000 times (line 2)"},
		{"nested literal ranges", tpl("name: ubuntu_provisioning", "name: ubuntu_provisioning\n# {{range 1000}}{{if true}}{{range 1000}}{{end}}{{end}}{{end}}"), "template", "{{range 1000}} (nested) loops more than"},
		{"recursive template", tpl("name: ubuntu_provisioning", `name: ubuntu_provisioning # {{define "a"}}{{range 10}}{{template "b"}}{{end}}{{end}}{{define "b"}}{{template "a"}}{{end}}{{template "a"}}`), "template", `template "a" calls itself`},
		{"merge of a scalar", oneAction("<<: 5\n        name: a\n        image: alpine"), a0, "merge key"},
		{"toggle_netboot quoted", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle_netboot: \"false\"\n"), "toggle_netboot", `must be true or false (unquoted), not "false" (line 4)`},
		{"toggle_netboot yes", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle_netboot: no\n"), "toggle_netboot", `not "no"`},
		{"toggle_netboot a number", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle_netboot: 0\n"), "toggle_netboot", `not "0"`},
		{"toggle_netboot a list", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle_netboot: [false]\n"), "toggle_netboot", "not a list"},
		{"toggle_netboot misspelt", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle-netboot: false\n"), "toggle-netboot", `did you mean "toggle_netboot"`},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatal("duplicate case name")
			}
			seen[tc.name] = true
			err := ValidateTemplate(tc.in)
			if err == nil {
				t.Fatal("ValidateTemplate accepted it")
			}
			requireFieldError(t, err, tc.field, tc.want)
		})
	}
}

// aliasBomb nests aliases so that a small file expands to billions of
// nodes.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("version: \"0.1\"\nname: x\nx0: &a0 [a, a, a, a, a, a, a, a, a, a]\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&b, "x%d: &a%d [*a%d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d, *a%[3]d]\n", i, i, i-1)
	}
	b.WriteString("tasks: *a11\n")
	return b.String()
}

func TestValidateTemplateGood(t *testing.T) {
	good := map[string]string{
		"example":                          goodTemplate,
		"v0.6 id key and unquoted version": tpl(`version: "0.1"`, "version: 0.1\nid: \"\""),
		"templated fields": oneAction(`name: "{{.name}}"
        image: "{{.registry}}/disk-wipe:{{.tag}}"
        timeout: "{{.timeout}}"
        pid: "{{.pid}}"
        volumes: ["{{.src}}:/x", "{{.src}}:/x"]
        environment:
          "{{.key}}": "{{.value}}"`),
		"small loops and template calls": tpl("name: ubuntu_provisioning", `name: ubuntu_provisioning # {{define "x"}}{{range 300}}{{end}}{{end}}{{range 300}}{{template "x"}}{{end}}`),
		"registry forms": oneAction(`name: a
        image: "[::1]:5000/a/b-c__d.e:latest"`),
		"worker literal MAC": strings.Replace(oneAction("name: a\n        image: alpine"), `"{{.device_1}}"`, "08:00:27:00:00:01", 1),
		"worker literal IP":  strings.Replace(oneAction("name: a\n        image: alpine"), `"{{.device_1}}"`, "10.1.0.5", 1),
		"anchors and merge keys": `version: "0.1"
name: anchors
tasks:
  - name: a
    worker: "{{.device_1}}"
    environment: &env
      A: "1"
    actions:
      - &act
        name: one
        image: alpine
        environment:
          <<: *env
          B: "2"
      - <<: *act
        name: two
`,
	}
	for name, in := range good {
		t.Run(name, func(t *testing.T) {
			if err := ValidateTemplate(in); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTemplateToggleNetboot: herd's toggle_netboot key is optional (v0.6
// templates lack it), a YAML boolean, and reaches the rendered template.
func TestTemplateToggleNetboot(t *testing.T) {
	devices := map[string]string{"device_1": "08:00:27:00:00:01", "device_2": "10.1.0.11"}
	for _, tc := range []struct {
		name, in string
		want     *bool
	}{
		{"absent (a v0.6 template)", goodTemplate, nil},
		{"false", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle_netboot: false\n"), new(false)},
		{"true", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle_netboot: true\n"), new(true)},
		{"null", tpl("global_timeout: 6000\n", "global_timeout: 6000\ntoggle_netboot:\n"), nil},
		// The rendered template decides: here the key is left out for
		// workflows with a device_2.
		{"rendered away", tpl("global_timeout: 6000\n", "global_timeout: 6000\n# {{if not .device_2}}\ntoggle_netboot: false\n# {{end}}\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateTemplate(tc.in); err != nil {
				t.Fatal(err)
			}
			got, _, err := RenderTemplate(tc.in, devices, renderHardware(t))
			if err != nil {
				t.Fatal(err)
			}
			if (got.ToggleNetboot == nil) != (tc.want == nil) || got.ToggleNetboot != nil && *got.ToggleNetboot != *tc.want {
				t.Errorf("ToggleNetboot = %v, want %v", ptrString(got.ToggleNetboot), ptrString(tc.want))
			}
		})
	}
}

func ptrString(b *bool) string {
	if b == nil {
		return "unset"
	}
	return fmt.Sprint(*b)
}

func TestTemplateName(t *testing.T) {
	if n, err := TemplateName(goodTemplate); err != nil || n != "ubuntu_provisioning" {
		t.Fatalf("TemplateName = %q, %v", n, err)
	}
	for in, field := range map[string]string{
		"version: \"0.1\"\n": "name",
		"name: [a]\n":        "name",
		"name:\n":            "name",
		"name: \"a\\x01\"\n": "name",
		"":                   "template",
		"a: [":               "template",
	} {
		_, err := TemplateName(in)
		if err == nil {
			t.Fatalf("TemplateName(%q) accepted it", in)
		}
		requireFieldError(t, err, field, "")
	}
	if err := ValidateName("ok name"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", strings.Repeat("x", 201), "a\nb"} {
		if err := ValidateName(bad); err == nil || strings.Contains(err.Error(), "name:") {
			t.Fatalf("ValidateName(%q) = %v", bad, err)
		}
	}
}

// renderHardware is the record of device_1 in render tests.
func renderHardware(t *testing.T) map[string]*hardware.Hardware {
	t.Helper()
	h, err := ParseHardware([]byte(goodHardware))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*hardware.Hardware{"device_1": h}
}

func TestRenderTemplate(t *testing.T) {
	devices := map[string]string{"device_1": "08:00:27:00:00:01", "device_2": "10.1.0.11"}
	got, text, err := RenderTemplate(goodTemplate, devices, renderHardware(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, `worker: "08:00:27:00:00:01"`) || !strings.Contains(text, `worker: "10.1.0.11"`) {
		t.Errorf("rendered text:\n%s", text)
	}
	if got.Name != "ubuntu_provisioning" || got.Version != "0.1" || got.GlobalTimeout != 6000 || len(got.Tasks) != 2 {
		t.Fatalf("template = %+v", got)
	}
	cmd := got.Tasks[0].Actions[2].Command
	wantCmd := []string{"sh", "-c", "echo node-1"}
	if !reflect.DeepEqual(cmd, wantCmd) {
		t.Errorf("command = %q, want %q", cmd, wantCmd)
	}
	if got.Tasks[0].Environment["MIRROR_HOST"] != "10.1.0.2" || got.Tasks[0].Actions[1].Environment["MIRROR_PORT"] != "8080" {
		t.Errorf("environment = %v / %v", got.Tasks[0].Environment, got.Tasks[0].Actions[1].Environment)
	}

	t.Run("hardware fields", func(t *testing.T) {
		in := oneAction(`name: a
        image: alpine
        environment:
          HOST: "{{.hardware.device_1.metadata.instance.hostname}}"
          LEASE: "{{(index .hardware.device_1.network.interfaces 0).dhcp.lease_time}}"
          BIG: "{{.hardware.device_1.metadata.big}}"
          ID: "{{.hardware.device_1.id}}"
          MAC: "{{.device_1}}"`)
		got, _, err := RenderTemplate(in, map[string]string{"device_1": "08:00:27:00:00:01"}, renderHardware(t))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"HOST": "node-1", "LEASE": "86400", "BIG": "12345678901234567890", "ID": "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94", "MAC": "08:00:27:00:00:01"}
		if env := got.Tasks[0].Actions[0].Environment; !reflect.DeepEqual(env, want) {
			t.Errorf("environment = %v, want %v", env, want)
		}
	})

	bad := []struct {
		name    string
		in      string
		devices map[string]string
		field   string
		want    string
	}{
		{"missing device", goodTemplate, map[string]string{"device_1": "08:00:27:00:00:01"}, "template", `line 35, column 15, {{.device_2}}: no value for key "device_2"; the workflow's devices are device_1`},
		{"missing device, none given", goodTemplate, nil, "template", `no value for key "device_1"; the workflow has no devices`},
		{"missing hardware field", tpl("metadata.instance.hostname", "metadata.instance.nickname"), devices, "template", `{{.hardware.device_1.metadata.instance.nickname}}: no value for key "nickname"`},
		{"missing hardware record", tpl("{{.hardware.device_1.metadata", "{{.hardware.device_2.metadata"), devices, "template", `no value for key "device_2"; the devices with hardware records are device_1`},
		{"reserved device key", goodTemplate, map[string]string{"device_1": "08:00:27:00:00:01", "device_2": "10.1.0.11", "hardware": "x"}, "devices", `"hardware" is reserved`},
		{"empty worker after rendering", goodTemplate, map[string]string{"device_1": "08:00:27:00:00:01", "device_2": ""}, "tasks[1].worker", "is required"},
		{"worker not an address after rendering", goodTemplate, map[string]string{"device_1": "08:00:27:00:00:01", "device_2": "node-2"}, "tasks[1].worker", `"node-2" is not a MAC or IP address`},
		{"rendered image checked", strings.Replace(oneAction("name: a\n        image: \"{{.img}}\""), "{{.device_1}}", "10.0.0.1", 1), map[string]string{"img": "Bad/Image"}, "tasks[0].actions[0].image", "must be lower case"},
		{"rendered braces checked", strings.Replace(oneAction("name: a\n        image: alpine\n        pid: \"{{.pid}}\""), "{{.device_1}}", "10.0.0.1", 1), map[string]string{"pid": "{{x}}"}, "tasks[0].actions[0].pid", "not supported"},
		{"renders too large", strings.Replace(oneAction("name: a\n        image: alpine\n        command: [\"{{range .n}}{{range $.n}}{{range $.n}}xxxxxxxxxxxxxxxxxxxx{{end}}{{end}}{{end}}\"]"), "{{.device_1}}", "10.0.0.1", 1), nil, "template", "renders to more than"},
		{"bad Go template", "{{if}}", nil, "template", "is not a valid Go template"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var hwm map[string]*hardware.Hardware
			if tc.name == "renders too large" {
				// 100 x 100 x 100 x 20 bytes = 20 MB of output if unbounded.
				tc.in = strings.ReplaceAll(tc.in, ".n}}", ".hardware.device_1.metadata.instance.storage.disks}}")
				h, err := ParseHardware([]byte(strings.Replace(goodHardware, `[{"device": "/dev/sda", "wipe_table": true}]`, "["+strings.TrimSuffix(strings.Repeat("1,", 100), ",")+"]", 1)))
				if err != nil {
					t.Fatal(err)
				}
				hwm = map[string]*hardware.Hardware{"device_1": h}
			} else {
				hwm = renderHardware(t)
			}
			_, _, err := RenderTemplate(tc.in, tc.devices, hwm)
			if err == nil {
				t.Fatal("RenderTemplate accepted it")
			}
			t.Log(err)
			requireFieldError(t, err, tc.field, tc.want)
		})
	}
}

func TestActions(t *testing.T) {
	devices := map[string]string{"device_1": "08:00:27:00:00:01", "device_2": "10.1.0.11"}
	tmpl, _, err := RenderTemplate(goodTemplate, devices, renderHardware(t))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{"08:00:27:00:00:01": "hw-1", "10.1.0.11": "hw-2"}
	got, err := tmpl.Actions(func(w string) (string, error) {
		id, ok := ids[w]
		if !ok {
			return "", errors.New("no hardware")
		}
		return id, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []*workflow.WorkflowAction{
		{
			TaskName: "os-installation", Name: "disk-wipe", Image: "disk-wipe", Timeout: 90, WorkerId: "hw-1",
			Volumes:     []string{"/dev:/dev", "/dev/console:/dev/console", "/lib/firmware:/lib/firmware:ro"},
			Environment: []string{"DEBUG=false", "MIRROR_HOST=10.1.0.2"},
		},
		{
			TaskName: "os-installation", Name: "disk-partition", Image: "quay.io/tinkerbell/disk-partition:v1.2", Timeout: 600, WorkerId: "hw-1",
			// The action's /lib/firmware mount replaces the task's.
			Volumes:     []string{"/dev:/dev", "/dev/console:/dev/console", "/lib/firmware:/lib/firmware:rw", "/statedir:/statedir"},
			Environment: []string{"DEBUG=false", "MIRROR_HOST=10.1.0.3", "MIRROR_PORT=8080"},
		},
		{
			TaskName: "os-installation", Name: "install-root-fs", Image: "localhost:5000/tools/install-root-fs@" + digest, WorkerId: "hw-1",
			Command:   tmpl.Tasks[0].Actions[2].Command,
			OnTimeout: []string{"echo", "timeout"}, OnFailure: []string{"echo", "failure"},
			Volumes:     []string{"/dev:/dev", "/dev/console:/dev/console", "/lib/firmware:/lib/firmware:ro"},
			Environment: []string{"DEBUG=false", "MIRROR_HOST=10.1.0.2"},
			Pid:         "host",
		},
		{TaskName: "second", Name: "hello", Image: "hello-world", WorkerId: "hw-2"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d actions, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("action %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}

	// Merge keys and anchors give each action its own copy.
	anchors, _, err := RenderTemplate(`version: "0.1"
name: anchors
tasks:
  - name: a
    worker: "{{.device_1}}"
    environment: &env
      A: "1"
      C: task
    actions:
      - &act
        name: one
        image: alpine
        environment:
          <<: *env
          B: "2"
      - <<: *act
        name: two
        environment: {C: action}
`, devices, nil)
	if err != nil {
		t.Fatal(err)
	}
	acts, err := anchors.Actions(func(string) (string, error) { return "hw-1", nil })
	if err != nil {
		t.Fatal(err)
	}
	if e := acts[0].Environment; !reflect.DeepEqual(e, []string{"A=1", "B=2", "C=task"}) {
		t.Errorf("one: environment %q", e)
	}
	if e := acts[1].Environment; acts[1].Name != "two" || acts[1].Image != "alpine" || !reflect.DeepEqual(e, []string{"A=1", "C=action"}) {
		t.Errorf("two: %v", acts[1])
	}

	// The resolver's error names the task and keeps its cause.
	cause := errors.New("no hardware with that address")
	_, err = tmpl.Actions(func(w string) (string, error) {
		if w == "10.1.0.11" {
			return "", cause
		}
		return "hw", nil
	})
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), `task "second"`) || !strings.Contains(err.Error(), "10.1.0.11") {
		t.Fatalf("error = %v", err)
	}
	if _, err := tmpl.Actions(nil); err == nil {
		t.Fatal("Actions(nil) did not fail")
	}
}

func TestMergeVolumes(t *testing.T) {
	tests := []struct {
		task, action, want []string
	}{
		{nil, nil, nil},
		{[]string{"/a:/x"}, nil, []string{"/a:/x"}},
		{nil, []string{"/a:/x"}, []string{"/a:/x"}},
		{[]string{"/a:/x", "/b:/y:ro"}, []string{"/c:/y/"}, []string{"/a:/x", "/c:/y/"}},
		{[]string{"/a:/x", "/b:/y"}, []string{"/c:/z", "/d:/x:ro"}, []string{"/b:/y", "/c:/z", "/d:/x:ro"}},
	}
	for _, tc := range tests {
		if got := mergeVolumes(tc.task, tc.action); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("mergeVolumes(%q, %q) = %q, want %q", tc.task, tc.action, got, tc.want)
		}
	}
}
