package ui

// Creating and editing a template. The page posts the YAML; the API
// (CreateTemplate, UpdateTemplate) validates it as it does the CLI's, and
// its refusal comes back on the editor: the operator's text kept, each
// problem listed and the line it names marked in the line numbers.

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/template"
)

// maxTemplateForm bounds a template form's body: the YAML at its limit,
// percent-encoded at worst (3 bytes a byte), and the CSRF field.
const maxTemplateForm = 3*spec.MaxTemplateBytes + 4096

// newTemplateText is the editor's text for a new template: the shape of
// one, to change.
const newTemplateText = `version: "0.1"
name: my-template
tasks:
  - name: "provision"
    worker: "{{.device_1}}"
    actions:
      - name: "wipe"
        image: herd/wipe
        timeout: 600
`

// problem is one of the API's objections to a template, at its line (0:
// the whole template, or a line the text does not have).
type problem struct {
	Line int
	Text string
}

// problemLine is how pkg/spec ends a problem with its line.
var problemLine = regexp.MustCompile(`\(line ([0-9]+)\)$`)

// templateProblems splits the API's message about a refused template (one
// problem a line) and reads the line each names; lines past the text's
// last, lines count, are the whole template's.
func templateProblems(msg string, lines int) []problem {
	var out []problem
	for _, text := range strings.Split(msg, "\n") {
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		p := problem{Text: text}
		if m := problemLine.FindStringSubmatch(text); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil && n >= 1 && n <= lines {
				p.Line = n
			}
		}
		out = append(out, p)
	}
	return out
}

// gutterLine is one line number of the editor, marked when a problem
// names it.
type gutterLine struct {
	N       int
	Problem string
}

// gutter numbers the lines of text and marks those the problems name.
func gutter(lines int, problems []problem) []gutterLine {
	out := make([]gutterLine, lines)
	for i := range out {
		out[i].N = i + 1
	}
	for _, p := range problems {
		if p.Line > 0 {
			g := &out[p.Line-1]
			if g.Problem != "" {
				g.Problem += "\n"
			}
			g.Problem += p.Text
		}
	}
	return out
}

// lineCount is how many lines the editor shows for text.
func lineCount(text string) int { return strings.Count(text, "\n") + 1 }

// formText is a textarea's text as the operator typed it: browsers send
// its line ends as CRLF.
func formText(v string) string { return strings.ReplaceAll(v, "\r\n", "\n") }

type editorView struct {
	CSRF string
	// ID is the template edited; "" for a new one.
	ID, Name, Data string
	// Updated is the edited copy's updated_at (RFC 3339): the save is
	// refused if the template has changed since.
	Updated  string
	Gutter   []gutterLine
	Problems []problem
	// Error is a refusal that is not about the text (the name is taken,
	// the template is gone).
	Error string
}

func (h *Handler) editor(w http.ResponseWriter, code int, v editorView) {
	v.Gutter = gutter(lineCount(v.Data), v.Problems)
	h.render(w, code, "edit.html", v)
}

func (h *Handler) newTemplatePage(w http.ResponseWriter, _ *http.Request, s session) {
	h.editor(w, http.StatusOK, editorView{CSRF: s.csrf, Data: newTemplateText})
}

func (h *Handler) editTemplatePage(w http.ResponseWriter, r *http.Request, s session) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		h.render(w, http.StatusBadRequest, "error.html", errorView{Message: "no such template: the id is not a UUID"})
		return
	}
	t, err := h.api.tpl.GetTemplate(h.asOperator(r.Context(), s.token), &template.GetRequest{GetBy: &template.GetRequest_Id{Id: id}})
	if err != nil {
		h.apiError(w, r, "template "+id, err)
		return
	}
	v := editorView{CSRF: s.csrf, ID: id, Name: t.GetName(), Data: t.GetData()}
	if at := t.GetUpdatedAt(); at != nil {
		v.Updated = at.AsTime().UTC().Format(time.RFC3339Nano)
	}
	h.editor(w, http.StatusOK, v)
}

// saveTemplate creates (no id in the path) or updates a template from the
// editor's text; the name is the YAML's. Saved, it goes to the template's
// page; refused, back to the editor with the text as sent.
func (h *Handler) saveTemplate(w http.ResponseWriter, r *http.Request, _ string, s session) {
	edited := r.PathValue("id")
	if edited != "" {
		if _, err := uuid.Parse(edited); err != nil {
			h.badRequest(w, "the template id is not a UUID")
			return
		}
	}
	data := formText(r.PostFormValue("data"))
	ctx := h.asOperator(r.Context(), s.token)
	id, err := edited, error(nil)
	if edited == "" {
		var res *template.CreateResponse
		if res, err = h.api.tpl.CreateTemplate(ctx, &template.WorkflowTemplate{Data: data}); err == nil {
			id = res.GetId()
		}
	} else {
		req := &template.WorkflowTemplate{Id: edited, Data: data}
		if u := r.PostFormValue("updated"); u != "" {
			at, perr := time.Parse(time.RFC3339Nano, u)
			if perr != nil {
				h.badRequest(w, "the form's updated time is not RFC 3339")
				return
			}
			req.UpdatedAt = timestamppb.New(at)
		}
		_, err = h.api.tpl.UpdateTemplate(ctx, req)
	}
	if err != nil {
		v := editorView{CSRF: s.csrf, ID: edited, Data: data, Updated: r.PostFormValue("updated")}
		code := httpStatus(err)
		if status.Code(err) == codes.FailedPrecondition {
			// Someone saved in between: the text sent stays in the editor
			// to copy from, with the stale copy's time, so saving it again
			// is refused again until the template is opened anew.
			v.Error = status.Convert(err).Message() + ". Your text is below, not saved: open the template again to see the other change."
			h.editor(w, http.StatusConflict, v)
			return
		}
		if status.Code(err) == codes.InvalidArgument {
			code = http.StatusUnprocessableEntity
			v.Problems = templateProblems(status.Convert(err).Message(), lineCount(data))
		} else {
			v.Error = status.Convert(err).Message()
			if code >= 500 {
				h.log.Warn("ui: saving a template failed", "template_id", v.ID, "peer", r.RemoteAddr, "error", err)
			}
		}
		h.editor(w, code, v)
		return
	}
	h.log.Info("ui: template saved", "template_id", id, "peer", r.RemoteAddr)
	http.Redirect(w, r, Prefix+"template/"+id, http.StatusSeeOther)
}

// limitBody reads a form of at most n bytes before fn, and refuses a
// larger one as such (not as the missing CSRF token it would look like).
func limitBody(n int64, fn http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, n)
		if err := r.ParseForm(); err != nil {
			code := http.StatusBadRequest
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				code = http.StatusRequestEntityTooLarge
			}
			http.Error(w, "refused: the form cannot be read: "+err.Error(), code)
			return
		}
		fn(w, r)
	}
}
