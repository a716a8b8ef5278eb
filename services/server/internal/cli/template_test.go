package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/herd-metal/herd/proto/template"
)

const helloWorld = `version: "0.1"
name: hello_world_workflow
global_timeout: 600
tasks:
  - name: "hello world"
    worker: "{{.device_1}}"
    actions:
      - name: "hello_world"
        image: hello-world
        timeout: 60
`

func TestTemplateInvalid(t *testing.T) {
	tests := []struct {
		name    string
		content string
		args    []string
		code    int
		want    string
	}{
		{name: "unknown key", content: strings.Replace(helloWorld, "timeout: 60", "timeout: 60\n        imagee: x", 1), code: ExitError, want: "invalid template: "},
		{name: "bad version", content: strings.Replace(helloWorld, `"0.1"`, `"0.2"`, 1), code: ExitError, want: "version"},
		{name: "bad Go template", content: strings.Replace(helloWorld, "{{.device_1}}", "{{.device_1", 1), code: ExitError, want: "invalid template"},
		{name: "bad --name", content: helloWorld, args: []string{"--name", "a\x01b"}, code: ExitUsage, want: "--name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			file := writeFile(t, "t.yml", tt.content)
			for _, cmd := range [][]string{
				{"template", "create", "--file", file},
				{"template", "update", "aaaaaaaa-0000-4000-8000-000000000001", "--file", file},
			} {
				r := h.run("", append(cmd, tt.args...)...)
				if r.code != tt.code || !strings.HasPrefix(r.stderr, "herd: ") || !strings.Contains(r.stderr, tt.want) {
					t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", cmd[:2], r.code, r.stderr, tt.code, tt.want)
				}
			}
			if len(h.dials()) != 0 {
				t.Fatal("dialled the server for an invalid template")
			}
		})
	}
}

func TestTemplates(t *testing.T) {
	h := newHarness(t)
	const id1 = "aaaaaaaa-0000-4000-8000-000000000001"
	const id2 = "aaaaaaaa-0000-4000-8000-000000000002"

	// Name from the YAML; the tink spelling --path works too.
	r := h.run("", "template", "create", "--path", writeFile(t, "hello.yml", helloWorld))
	if r.code != 0 || r.stdout != "Created Template: "+id1+"\n" {
		t.Fatalf("create: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := h.srv.last().(*template.WorkflowTemplate); got.GetName() != "hello_world_workflow" || got.GetData() != helloWorld {
		t.Fatalf("created %v", got)
	}
	// --name wins; stdin; JSON output.
	r = h.run(helloWorld, "template", "create", "--name", "other", "-o", "json")
	if r.code != 0 {
		t.Fatalf("create: exit %d, stderr %q", r.code, r.stderr)
	}
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.ID != id2 {
		t.Fatalf("create -o json: %q (%v)", r.stdout, err)
	}
	// Server errors come through as their message.
	r = h.run(helloWorld, "template", "create")
	if r.code != 1 || r.stderr != "herd: a template named hello_world_workflow exists\n" {
		t.Fatalf("duplicate create: exit %d, stderr %q", r.code, r.stderr)
	}

	// get by id and by name prints the YAML.
	for _, ref := range []string{id1, "hello_world_workflow"} {
		r = h.run("", "template", "get", ref)
		if r.code != 0 || r.stdout != helloWorld {
			t.Errorf("get %s: exit %d, stdout %q, stderr %q", ref, r.code, r.stdout, r.stderr)
		}
	}
	r = h.run("", "template", "get", "other", "-o", "json")
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got["id"] != id2 || got["name"] != "other" || got["data"] != helloWorld {
		t.Errorf("get -o json: %q (%v)", r.stdout, err)
	}

	// list: table, filtered, quiet, JSON lines.
	h.srv.templates[0].CreatedAt = ts("2025-01-02T03:04:05Z")
	h.srv.templates[0].UpdatedAt = ts("2025-01-02T03:04:06Z")
	r = h.run("", "template", "list")
	want := "ID                                    NAME                  CREATED AT            UPDATED AT\n" +
		id1 + "  hello_world_workflow  2025-01-02T03:04:05Z  2025-01-02T03:04:06Z\n" +
		id2 + "  other\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("list:\n%s\nwant\n%s", r.stdout, want)
	}
	r = h.run("", "template", "list", "--name", "hello*", "-q")
	if r.stdout != id1+"\n" {
		t.Errorf("list --name hello* -q: %q", r.stdout)
	}
	if f := h.srv.last().(*template.ListRequest); f.GetName() != "hello*" {
		t.Errorf("list sent filter %v", f)
	}
	r = h.run("", "template", "list", "-o", "json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("list -o json: %q", r.stdout)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["id"] == nil {
			t.Errorf("list line %q: %v", l, err)
		}
	}

	// update: name from the YAML unless --name.
	changed := strings.Replace(helloWorld, "hello_world_workflow", "renamed", 1)
	r = h.run(changed, "template", "update", id1)
	if r.code != 0 || r.stdout != "Template "+id1+" updated\n" {
		t.Fatalf("update: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if u := h.srv.last().(*template.WorkflowTemplate); u.GetId() != id1 || u.GetName() != "renamed" || u.GetData() != changed {
		t.Errorf("update sent %v", u)
	}
	r = h.run(changed, "template", "update", id1, "-n", "forced")
	if u := h.srv.last().(*template.WorkflowTemplate); r.code != 0 || u.GetName() != "forced" {
		t.Errorf("update --name sent %v", u)
	}

	// delete by id or name.
	if r = h.run("", "template", "delete", "forced"); r.code != 0 || r.stdout != "Template forced deleted\n" {
		t.Errorf("delete: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r = h.run("", "template", "delete", id2, "-o", "json"); r.code != 0 || r.stdout != "{}\n" {
		t.Errorf("delete -o json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r = h.run("", "template", "get", id2); r.code != 1 || r.stderr != "herd: template "+id2+" not found\n" {
		t.Errorf("get deleted: exit %d, stderr %q", r.code, r.stderr)
	}
}
