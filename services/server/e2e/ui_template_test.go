package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/herd-metal/herd/pkg/servertest"
	templatev1 "github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/services/server/internal/ui/uitest"
)

// editedTemplate is a valid template; badImage puts an error on its line
// 8, badIndent a YAML syntax error on its line 5.
const editedTemplate = `version: "0.1"
name: ui-edited
tasks:
  - name: "disk"
    worker: "{{.device_1}}"
    actions:
      - name: "wipe"
        image: busybox
        timeout: 60
`

// TestUITemplateEditor creates and edits a template in the browser: the
// server refuses one with an error on a known line and the editor marks
// that line, keeping the text; a valid one is saved and `herd template
// get` returns it; an edit is saved through UpdateTemplate; a forged
// post without the CSRF token saves nothing.
func TestUITemplateEditor(t *testing.T) {
	s := servertest.Start(t)
	b := uitest.Browser(t)
	uitest.Login(t, b, s.HTTP, servertest.AdminToken)
	uitest.Step(t, b, "reach the fleet", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
	uitest.Step(t, b, "open a new template", chromedp.Click(chromedp.CSS(`header nav a[href="/ui/templates"]`)),
		chromedp.WaitVisible(chromedp.CSS("#new-template")), chromedp.Click(chromedp.CSS("#new-template")),
		chromedp.WaitVisible(chromedp.CSS("#template-text")))

	badImage := strings.Replace(editedTemplate, "image: busybox", `image: "Busy Box"`, 1)
	badIndent := strings.Replace(editedTemplate, `    worker: "{{.device_1}}"`, `   worker: "{{.device_1}}"`, 1)
	for _, tc := range []struct {
		name, text string
		line       string
		mention    string
	}{
		{"an image that is not one", badImage, "8", "tasks[0].actions[0].image"},
		// yaml.v3 names line 4 (where the task begins); the editor marks
		// the line the text breaks at.
		{"a mis-indented key", badIndent, "5", "is not valid YAML"},
	} {
		// A fresh editor each time: the last page's problems must not
		// pass for this one's.
		uitest.Step(t, b, "open a new editor", chromedp.Navigate(s.HTTP+"/ui/templates/new"), chromedp.WaitVisible(chromedp.CSS("#template-text")))
		uitest.SetControl(t, b, "template-text", tc.text)
		uitest.Step(t, b, "save "+tc.name, chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#problems")))
		marked := uitest.Get(t, b, "read the marked lines", chromedp.Evaluate[[]string](
			`Array.from(document.querySelectorAll("#gutter li.bad")).map(li => li.dataset.line)`))
		if strings.Join(marked, ",") != tc.line {
			t.Fatalf("%s: lines %v marked, want %s", tc.name, marked, tc.line)
		}
		listed := uitest.Get(t, b, "read the problems", chromedp.Text(chromedp.CSS("#problems ul")))
		if !strings.Contains(listed, "line "+tc.line) || !strings.Contains(listed, tc.mention) {
			t.Fatalf("%s: problems shown %q, want line %s and %q", tc.name, listed, tc.line, tc.mention)
		}
		if kept := uitest.Get(t, b, "read the text", chromedp.Evaluate[string](`document.getElementById("template-text").value`)); kept != tc.text {
			t.Fatalf("%s: the editor holds\n%q\nwant the text sent\n%q", tc.name, kept, tc.text)
		}
		// The marked number sits beside its line: the gutter's rows are
		// the text's line height, one after another from the first.
		rows := uitest.Get(t, b, "measure the rows", chromedp.Evaluate[[]float64](`(() => {
			const t = document.getElementById("template-text"), li = document.querySelector("#gutter li.bad");
			const first = document.querySelector("#gutter li").getBoundingClientRect().top;
			return [li.getBoundingClientRect().top - first, li.getBoundingClientRect().height, parseFloat(getComputedStyle(t).lineHeight)]; })()`))
		n, _ := strconv.Atoi(tc.line)
		if rows[1] != rows[2] || rows[0] != float64(n-1)*rows[2] {
			t.Fatalf("%s: marked number %vpx below the first, %vpx high; want %vpx and the text's line height %vpx",
				tc.name, rows[0], rows[1], float64(n-1)*rows[2], rows[2])
		}
	}
	if out := s.MustHerd("", "template", "list"); strings.Contains(out, "ui-edited") {
		t.Fatalf("a refused template was saved:\n%s", out)
	}

	uitest.SetControl(t, b, "template-text", editedTemplate)
	uitest.Step(t, b, "save a valid one", chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#template-data")))
	loc := uitest.Get(t, b, "read the location", chromedp.Location())
	id := loc[strings.LastIndex(loc, "/")+1:]
	if got := s.MustHerd("", "template", "get", id); got != editedTemplate {
		t.Fatalf("herd template get %s:\n%q\nwant what the editor saved\n%q", id, got, editedTemplate)
	}

	// Edit it: a problem first (nothing saved), then the change.
	edited := strings.Replace(editedTemplate, "timeout: 60", "timeout: 90", 1)
	uitest.Step(t, b, "open the editor", chromedp.Click(chromedp.CSS("#edit-template")), chromedp.WaitVisible(chromedp.CSS("#template-text")))
	uitest.SetControl(t, b, "template-text", badImage)
	uitest.Step(t, b, "save a broken edit", chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS(`#gutter li.bad[data-line="8"]`)))
	tc := templatev1.NewTemplateServiceClient(s.Dial(adminToken))
	stored := func() string {
		tpl, err := tc.GetTemplate(ctx(t), &templatev1.GetRequest{GetBy: &templatev1.GetRequest_Id{Id: id}})
		if err != nil {
			t.Fatal(err)
		}
		return tpl.GetData()
	}
	if got := stored(); got != editedTemplate {
		t.Fatalf("a refused edit changed the template to\n%s", got)
	}
	uitest.SetControl(t, b, "template-text", edited)
	uitest.Step(t, b, "save the edit", chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#template-data")))
	if got := stored(); got != edited {
		t.Fatalf("after the edit the API returns\n%q\nwant\n%q", got, edited)
	}

	// Someone else saves while the editor is open: the editor's save is
	// refused, and again if retried, until the template is opened anew.
	uitest.Step(t, b, "open the editor again", chromedp.Click(chromedp.CSS("#edit-template")), chromedp.WaitVisible(chromedp.CSS("#template-text")))
	theirs := strings.Replace(edited, "timeout: 90", "timeout: 120", 1)
	if _, err := tc.UpdateTemplate(ctx(t), &templatev1.WorkflowTemplate{Id: id, Data: theirs}); err != nil {
		t.Fatal(err)
	}
	mine := strings.Replace(edited, "timeout: 90", "timeout: 30", 1)
	uitest.SetControl(t, b, "template-text", mine)
	for _, try := range []string{"save over their change", "save it again"} {
		// The last refusal goes first, so that the wait is for this one's page.
		uitest.Get(t, b, "clear the last refusal", chromedp.Evaluate[bool](`document.getElementById("save-error")?.remove(), true`))
		uitest.Step(t, b, try, chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#save-error")))
		msg := uitest.Get(t, b, "read the refusal", chromedp.Text(chromedp.CSS("#save-error")))
		if !strings.Contains(msg, "was changed at") || !strings.Contains(msg, "not saved") {
			t.Fatalf("%s: the editor says %q, want the other change named", try, msg)
		}
		if got := stored(); got != theirs {
			t.Fatalf("%s: the template became\n%s\nwant their change kept", try, got)
		}
		if kept := uitest.Get(t, b, "read the text", chromedp.Evaluate[string](`document.getElementById("template-text").value`)); kept != mine {
			t.Fatalf("%s: the editor lost the text sent: %q", try, kept)
		}
	}
	uitest.Step(t, b, "open it anew", chromedp.Navigate(s.HTTP+"/ui/template/"+id+"/edit"), chromedp.WaitVisible(chromedp.CSS("#template-text")))
	uitest.SetControl(t, b, "template-text", mine)
	uitest.Step(t, b, "save on the current copy", chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#template-data")))
	if got := stored(); got != mine {
		t.Fatalf("after saving on the current copy the API returns\n%q\nwant\n%q", got, mine)
	}

	// Forged posts: no CSRF token, a wrong one, another site.
	c := uitest.Cookies(t, b, s.HTTP)[0]
	cookie := c.Name + "=" + c.Value
	forged := strings.Replace(editedTemplate, "ui-edited", "ui-forged", 1)
	for _, f := range []struct {
		name, path, origin string
		form               url.Values
	}{
		{"create without a CSRF token", "/ui/templates", "", url.Values{"data": {forged}}},
		{"create with a wrong CSRF token", "/ui/templates", "", url.Values{"data": {forged}, "csrf": {"forged"}}},
		{"update without a CSRF token", "/ui/template/" + id, "", url.Values{"data": {forged}}},
		{"update from another site", "/ui/template/" + id, "http://attacker.example", url.Values{"data": {forged}}},
	} {
		res := uiDo(t, http.MethodPost, s.HTTP+f.path, cookie, f.origin, f.form)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("%s: %d %q, want 403", f.name, res.StatusCode, body)
		}
	}
	if got := stored(); got != mine {
		t.Fatalf("a forged post changed the template to\n%s", got)
	}
	if out := s.MustHerd("", "template", "list"); strings.Contains(out, "ui-forged") {
		t.Fatalf("a forged post created a template:\n%s", out)
	}

	// A template past the API's limit comes back to the editor refused
	// (the form's own bound is TestLimitBody's).
	res := uiDo(t, http.MethodPost, s.HTTP+"/ui/templates", cookie, "", url.Values{"csrf": {csrf(t, b)}, "data": {strings.Repeat("a", 2<<20)}})
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "1 MiB") {
		t.Fatalf("a 2 MiB template: %d, want 422 naming the 1 MiB limit; page:\n%.2000s", res.StatusCode, body)
	}
}

// csrf is the CSRF token of the page the browser shows.
func csrf(t *testing.T, b context.Context) string {
	t.Helper()
	return uitest.Get(t, b, "read the CSRF token", chromedp.Evaluate[string](`document.querySelector("input[name=csrf]").value`))
}
