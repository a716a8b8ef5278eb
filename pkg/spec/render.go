package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// hardwareKey is the template data key holding the devices' hardware
// records, so no device may be called that.
const hardwareKey = "hardware"

// Bounds on what rendering may cost, checked on the parsed text/template
// before it runs: text/template has no way to stop a running Execute.
const (
	// maxLiteralLoops bounds the product of nested {{range N}} counts.
	maxLiteralLoops = 100_000
	// maxTemplateCalls bounds {{template}} calls met walking the tree.
	maxTemplateCalls = 10_000
)

// newTextTemplate parses a template's text as Go text/template, the way
// it will be rendered, and refuses what could render for ever.
func newTextTemplate(raw string) (*template.Template, error) {
	t, err := template.New("template").Option("missingkey=error").Parse(raw)
	if err != nil {
		return nil, &FieldError{Field: "template", Problem: goTemplateSyntax(err)}
	}
	w := &loopCheck{tpl: t, raw: raw}
	if msg := w.walk(t.Tree.Root, 1, []string{t.Name()}); msg != "" {
		return nil, &FieldError{Field: "template", Problem: msg}
	}
	return t, nil
}

// goTemplateSyntax words a text/template parse error as the other
// problems are: "template: template:6: bad character" becomes "is not a
// valid Go template: bad character (line 6)".
func goTemplateSyntax(err error) string {
	msg := strings.TrimPrefix(err.Error(), "template: template:")
	if n, after, ok := strings.Cut(msg, ": "); ok {
		if l, err := strconv.Atoi(n); err == nil {
			return atLine("is not a valid Go template: "+after, l)
		}
	}
	return "is not a valid Go template: " + msg
}

// loopCheck walks a parsed template refusing recursive {{template}} calls
// and nested {{range N}} over integer literals that multiply past
// maxLiteralLoops. Loops over the data are bounded by the data's size.
type loopCheck struct {
	tpl   *template.Template
	raw   string
	calls int
}

func (c *loopCheck) walk(n parse.Node, factor int64, stack []string) string {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return ""
		}
		for _, e := range n.Nodes {
			if msg := c.walk(e, factor, stack); msg != "" {
				return msg
			}
		}
	case *parse.IfNode:
		return c.branch(&n.BranchNode, factor, factor, stack)
	case *parse.WithNode:
		return c.branch(&n.BranchNode, factor, factor, stack)
	case *parse.RangeNode:
		inner := factor
		if cmds := n.Pipe.Cmds; len(cmds) == 1 && len(cmds[0].Args) == 1 {
			if num, ok := cmds[0].Args[0].(*parse.NumberNode); ok && num.IsInt && num.Int64 > 1 {
				if num.Int64 > maxLiteralLoops || factor*num.Int64 > maxLiteralLoops {
					return atLine(fmt.Sprintf("{{range %s}} (nested) loops more than %d times", num.Text, maxLiteralLoops), c.line(n))
				}
				inner = factor * num.Int64
			}
		}
		return c.branch(&n.BranchNode, inner, factor, stack)
	case *parse.TemplateNode:
		if slices.Contains(stack, n.Name) {
			return atLine(fmt.Sprintf("template %q calls itself", n.Name), c.line(n))
		}
		if c.calls++; c.calls > maxTemplateCalls {
			return fmt.Sprintf("makes more than %d {{template}} calls", maxTemplateCalls)
		}
		if t := c.tpl.Lookup(n.Name); t != nil && t.Tree != nil {
			return c.walk(t.Tree.Root, factor, append(stack[:len(stack):len(stack)], n.Name))
		}
	}
	return ""
}

func (c *loopCheck) branch(b *parse.BranchNode, inner, outer int64, stack []string) string {
	if msg := c.walk(b.List, inner, stack); msg != "" {
		return msg
	}
	if b.ElseList != nil {
		return c.walk(b.ElseList, outer, stack)
	}
	return ""
}

func (c *loopCheck) line(n parse.Node) int {
	pos := min(max(int(n.Position()), 0), len(c.raw))
	return 1 + strings.Count(c.raw[:pos], "\n")
}

// RenderTemplate renders a template for one workflow and checks the result
// fully. The data are the devices (device_1 -> MAC or IP) plus the key
// "hardware": device -> that device's hardware record as a generic map in
// the shape of MarshalHardware's JSON, so
// {{.hardware.device_1.metadata.instance.hostname}} works. A key the
// template uses but the data lack is an error naming the key. It returns the
// parsed template and the rendered YAML.
func RenderTemplate(raw string, devices map[string]string, hw map[string]*hardware.Hardware) (*Template, string, error) {
	if err := templateSize(raw); err != nil {
		return nil, "", err
	}
	if _, ok := devices[hardwareKey]; ok {
		return nil, "", &FieldError{Field: "devices", Problem: `"hardware" is reserved for the devices' hardware records; give the device another name`}
	}
	data := make(map[string]any, len(devices)+1)
	for k, v := range devices {
		data[k] = v
	}
	records := make(map[string]any, len(hw))
	for dev, rec := range hw {
		if rec == nil {
			continue
		}
		v, err := hardwareData(rec)
		if err != nil {
			return nil, "", fmt.Errorf("render template: device %s: %w", dev, err)
		}
		records[dev] = v
	}
	data[hardwareKey] = records

	tpl, err := newTextTemplate(raw)
	if err != nil {
		return nil, "", err
	}
	out := &limitedBuffer{max: MaxTemplateBytes}
	if err := tpl.Execute(out, data); err != nil {
		if errors.Is(err, errRenderTooLarge) {
			return nil, "", &FieldError{Field: "template", Problem: fmt.Sprintf("renders to more than %d bytes (1 MiB)", MaxTemplateBytes)}
		}
		return nil, "", renderError(err, devices, records)
	}
	text := out.String()
	t, err := parseTemplate(text, true)
	if err != nil {
		return nil, "", fmt.Errorf("rendered template: %w", err)
	}
	return t, text, nil
}

// hardwareData is a record as the generic map templates see; numbers stay
// json.Number so they print as written (86400, not 86400.0 or 8.64e+04).
func hardwareData(hw *hardware.Hardware) (any, error) {
	b, err := MarshalHardware(hw)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode hardware %s: %w", hw.GetId(), err)
	}
	return v, nil
}

var (
	errRenderTooLarge = errors.New("rendered template too large")
	// text/template's execution errors read
	// `template: NAME:LINE:COL: executing "NAME" at <EXPR>: PROBLEM`.
	execErrorRE  = regexp.MustCompile(`(?s)^template: [^:]*:(\d+):(\d+): executing "[^"]*" at <(.*?)>: (.*)$`)
	missingKeyRE = regexp.MustCompile(`^map has no entry for key "(.*)"$`)
)

// renderError rewrites a text/template execution error for an operator:
// where, which expression, and for a missing key which key and which
// devices the workflow has.
func renderError(err error, devices map[string]string, records map[string]any) error {
	m := execErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &FieldError{Field: "template", Problem: "cannot be rendered: " + strings.TrimPrefix(err.Error(), "template: ")}
	}
	line, col, expr, what := m[1], m[2], m[3], m[4]
	if k := missingKeyRE.FindStringSubmatch(what); k != nil {
		what = fmt.Sprintf("no value for key %q", k[1])
		parts := strings.Split(expr, ".")
		switch {
		case len(parts) > 1 && parts[0] == "" && parts[1] == k[1]:
			switch names := sortedKeys(devices); len(names) {
			case 0:
				what += "; the workflow has no devices"
			default:
				what += "; the workflow's devices are " + strings.Join(names, ", ")
			}
		case len(parts) > 2 && parts[0] == "" && parts[1] == hardwareKey && parts[2] == k[1]:
			switch names := sortedKeys(records); len(names) {
			case 0:
				what += "; no device has a hardware record"
			default:
				what += "; the devices with hardware records are " + strings.Join(names, ", ")
			}
		}
	}
	return &FieldError{Field: "template", Problem: fmt.Sprintf("cannot be rendered: line %s, column %s, {{%s}}: %s", line, col, expr, what)}
}

// limitedBuffer fails writes past max bytes.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errRenderTooLarge
	}
	return b.Buffer.Write(p)
}

// Actions lists the template's actions in run order, as workers receive
// them. Each action's environment is its task's environment with the
// action's own variables winning, as sorted KEY=value; its volumes are the
// task's, minus those whose destination the action mounts itself, then the
// action's. worker_id is resolve(task.Worker), the hardware id of the
// machine with that MAC or IP; a resolve error is returned naming the task.
func (t *Template) Actions(resolve func(worker string) (hardwareID string, err error)) ([]*workflow.WorkflowAction, error) {
	if resolve == nil {
		return nil, errors.New("template actions: no worker resolver")
	}
	var out []*workflow.WorkflowAction
	for _, task := range t.Tasks {
		id, err := resolve(task.Worker)
		if err != nil {
			return nil, fmt.Errorf("task %q: worker %q: %w", task.Name, task.Worker, err)
		}
		for _, a := range task.Actions {
			out = append(out, &workflow.WorkflowAction{
				TaskName:    task.Name,
				Name:        a.Name,
				Image:       a.Image,
				Timeout:     a.Timeout,
				Command:     cloneStrings(a.Command),
				OnTimeout:   cloneStrings(a.OnTimeout),
				OnFailure:   cloneStrings(a.OnFailure),
				WorkerId:    id,
				Volumes:     mergeVolumes(task.Volumes, a.Volumes),
				Environment: mergeEnvironment(task.Environment, a.Environment),
				Pid:         a.Pid,
			})
		}
	}
	return out, nil
}

func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

// mergeVolumes: task volumes in order, except those whose destination the
// action mounts, then the action's volumes in order.
func mergeVolumes(task, action []string) []string {
	own := map[string]bool{}
	for _, v := range action {
		own[volumeDest(v)] = true
	}
	var out []string
	for _, v := range task {
		if !own[volumeDest(v)] {
			out = append(out, v)
		}
	}
	return append(out, action...)
}

// mergeEnvironment: the task's variables overridden by the action's, as
// KEY=value sorted by KEY.
func mergeEnvironment(task, action map[string]string) []string {
	merged := make(map[string]string, len(task)+len(action))
	for k, v := range task {
		merged[k] = v
	}
	for k, v := range action {
		merged[k] = v
	}
	var out []string
	for _, k := range sortedKeys(merged) {
		out = append(out, k+"="+merged[k])
	}
	return out
}
