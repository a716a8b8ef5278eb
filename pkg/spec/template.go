package spec

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits of a template.
const (
	// MaxTemplateBytes bounds a template's YAML, raw and rendered.
	MaxTemplateBytes = 1 << 20
	// MaxNameLength bounds template, task and action names, in characters.
	MaxNameLength = 200
	// MaxTimeoutSeconds bounds global_timeout and action timeouts (about
	// 68 years), so that every timeout fits a time.Duration.
	MaxTimeoutSeconds = math.MaxInt32
	// maxYAMLNodes bounds a template's YAML nodes after expanding aliases,
	// so that a few anchors cannot blow up into millions of actions.
	maxYAMLNodes = 1 << 20
)

// Template is a Tinkerbell v0.6 workflow template.
type Template struct {
	Version       string `yaml:"version"`
	Name          string `yaml:"name"`
	GlobalTimeout int    `yaml:"global_timeout,omitempty"`
	// ToggleNetboot is herd's toggle_netboot key: whether the server
	// switches the netboot (allow_pxe) of the workflow's machines itself,
	// on at creation and off at SUCCESS. nil when the template does not
	// say; a workflow's create request may still decide otherwise.
	ToggleNetboot *bool  `yaml:"toggle_netboot,omitempty"`
	Tasks         []Task `yaml:"tasks"`
}

// Task is a list of actions run in order on one worker machine.
type Task struct {
	Name string `yaml:"name"`
	// Worker is the MAC or IP address of the machine, usually a template
	// expression such as {{.device_1}} before rendering.
	Worker      string            `yaml:"worker"`
	Volumes     []string          `yaml:"volumes,omitempty"`
	Environment map[string]string `yaml:"environment,omitempty"`
	Actions     []Action          `yaml:"actions"`
}

// Action is one container run by the worker.
type Action struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	// Timeout in seconds; 0 means no timeout.
	Timeout     int64             `yaml:"timeout,omitempty"`
	Command     []string          `yaml:"command,omitempty"`
	OnTimeout   []string          `yaml:"on-timeout,omitempty"`
	OnFailure   []string          `yaml:"on-failure,omitempty"`
	Volumes     []string          `yaml:"volumes,omitempty"`
	Environment map[string]string `yaml:"environment,omitempty"`
	// Pid is "" (the container's own PID namespace) or "host".
	Pid string `yaml:"pid,omitempty"`
}

// YAML keys of each level, in the order they are documented. "id" at the
// top is accepted and ignored: Tinkerbell v0.6's parser knew it.
// "toggle_netboot" is herd's own; v0.6 templates do without it.
var (
	templateKeys = []string{"version", "name", "global_timeout", "toggle_netboot", "tasks", "id"}
	taskKeys     = []string{"name", "worker", "volumes", "environment", "actions"}
	actionKeys   = []string{"name", "image", "timeout", "command", "on-timeout", "on-failure", "volumes", "environment", "pid"}
)

// ValidateName checks a template name given apart from its YAML (the
// name of a create or update request): not empty, at most MaxNameLength
// characters, no control characters. The error is the problem alone, for
// the caller to attach to its field.
func ValidateName(name string) error {
	if msg := nameProblem(name); msg != "" {
		return errors.New(msg)
	}
	return nil
}

func nameProblem(s string) string {
	if s == "" {
		return "is required"
	}
	if msg := textProblem(s); msg != "" {
		return msg
	}
	if n := utf8.RuneCountInString(s); n > MaxNameLength {
		return fmt.Sprintf("is %d characters long; the limit is %d", n, MaxNameLength)
	}
	return ""
}

// ValidateTemplate checks a template as stored, before rendering: it is a
// Go text/template, its YAML parses strictly (no unknown or repeated keys),
// version is "0.1", names are present, short and unique, every task has a
// worker and at least one action, images, timeouts, volumes, environment
// and pid are well formed, and herd's toggle_netboot, when present, is
// true or false. A value that still holds "{{" is only checked once the
// template is rendered.
func ValidateTemplate(raw string) error {
	if err := templateSize(raw); err != nil {
		return err
	}
	if _, err := newTextTemplate(raw); err != nil {
		return err
	}
	_, err := parseTemplate(raw, false)
	return err
}

// TemplateName returns the name: field of a template's YAML. It checks only
// what it needs; ValidateTemplate checks the rest.
func TemplateName(raw string) (string, error) {
	if err := templateSize(raw); err != nil {
		return "", err
	}
	root, err := yamlRoot(raw)
	if err != nil {
		return "", err
	}
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			k, v := root.Content[i], root.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Value != "name" {
				continue
			}
			for v.Kind == yaml.AliasNode && v.Alias != nil {
				v = v.Alias
			}
			if v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" {
				return "", &FieldError{Field: "name", Problem: "must be a string"}
			}
			if msg := nameProblem(v.Value); msg != "" {
				return "", &FieldError{Field: "name", Problem: msg}
			}
			return v.Value, nil
		}
	}
	return "", &FieldError{Field: "name", Problem: "is required"}
}

func templateSize(s string) error {
	if len(s) > MaxTemplateBytes {
		return &FieldError{Field: "template", Problem: fmt.Sprintf("is %d bytes; the limit is %d (1 MiB)", len(s), MaxTemplateBytes)}
	}
	return nil
}

// parseTemplate parses and checks template YAML. Before rendering, values
// holding "{{" skip their format checks and problems carry line numbers;
// rendered templates get every check.
func parseTemplate(text string, rendered bool) (*Template, error) {
	if err := templateSize(text); err != nil {
		return nil, err
	}
	root, err := yamlRoot(text)
	if err != nil {
		return nil, err
	}
	if err := checkYAMLSize(root); err != nil {
		return nil, err
	}
	r := &yamlReader{rendered: rendered}
	t := r.template(root)
	if err := r.p.err("template"); err != nil {
		return nil, err
	}
	return t, nil
}

// environment reads KEY: value pairs.
func (r *yamlReader) environment(path string, n *yaml.Node) map[string]string {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		r.add(path, n, "must be a mapping of NAME: value, not %s", kindName(n))
		return nil
	}
	out := map[string]string{}
	for _, pp := range r.pairs(path, n) {
		p := child(path, pp.key)
		if !r.templated(pp.key) {
			if msg := envKeyProblem(pp.key); msg != "" {
				r.add(p, pp.keyNode, "%s", msg)
			}
		}
		v := r.str(p, pp.valNode)
		if strings.ContainsRune(v, 0) {
			r.add(p, resolve(pp.valNode), "contains a NUL character")
		}
		out[pp.key] = v
	}
	return out
}

func envKeyProblem(k string) string {
	if k == "" {
		return "an environment variable needs a name"
	}
	if k[0] >= '0' && k[0] <= '9' {
		return fmt.Sprintf("%s is not a variable name: it starts with a digit", quote(k))
	}
	for _, c := range k {
		if c == '=' || unicode.IsSpace(c) || unicode.IsControl(c) {
			return fmt.Sprintf("%s is not a variable name: no \"=\", spaces or control characters", quote(k))
		}
	}
	return ""
}

// volumes reads host:container[:ro|rw] mounts, one per destination.
func (r *yamlReader) volumes(path string, n *yaml.Node) []string {
	vols := r.list(path, n)
	seq := resolve(n)
	dests := map[string]int{}
	for i, v := range vols {
		if r.templated(v) {
			continue
		}
		node := resolve(seq.Content[i])
		if msg := volumeProblem(v); msg != "" {
			r.add(index(path, i), node, "%s", msg)
			continue
		}
		d := volumeDest(v)
		if first, dup := dests[d]; dup {
			r.add(index(path, i), node, "mounts %s again (already %s)", d, index(path, first))
			continue
		}
		dests[d] = i
	}
	return vols
}

func volumeProblem(v string) string {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return fmt.Sprintf("%s is not a volume: write source:destination or source:destination:ro", quote(v))
	}
	src, dst := parts[0], parts[1]
	switch {
	case src == "":
		return fmt.Sprintf("%s has no source", quote(v))
	case strings.HasPrefix(src, "/"):
	default:
		for i := 0; i < len(src); i++ {
			c := src[i]
			alnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
			if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
				return fmt.Sprintf("%s: the source must be an absolute host path or a volume name", quote(v))
			}
		}
	}
	switch {
	case !strings.HasPrefix(dst, "/"):
		return fmt.Sprintf("%s: the destination must be an absolute path in the container", quote(v))
	case path.Clean(dst) == "/":
		return fmt.Sprintf("%s: the destination cannot be the container's root", quote(v))
	}
	if len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw" {
		return fmt.Sprintf("%s: the mode %s is not ro or rw", quote(v), quote(parts[2]))
	}
	for _, c := range v {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return fmt.Sprintf("%s contains spaces or control characters", quote(v))
		}
	}
	return ""
}

// volumeDest is the container path a volume mounts.
func volumeDest(v string) string {
	parts := strings.Split(v, ":")
	if len(parts) >= 2 {
		return path.Clean(parts[1])
	}
	return path.Clean(parts[0])
}

// name reads and checks a name field.
func (r *yamlReader) name(path string, f map[string]*yaml.Node, parent *yaml.Node) string {
	n := f["name"]
	v := r.str(path, n)
	if v != "" || missing(n) {
		if msg := nameProblem(v); msg != "" {
			r.add(path, at(n, parent), "%s", msg)
		}
	}
	return v
}

func (r *yamlReader) template(root *yaml.Node) *Template {
	root = resolve(root)
	if isNull(root) || root.Kind != yaml.MappingNode {
		r.add("template", root, "must be a mapping with version, name and tasks, not %s", kindName(root))
		return nil
	}
	f := r.fields("", root, templateKeys)
	t := &Template{}
	t.Version = r.str("version", f["version"])
	switch {
	case t.Version == "" && missing(f["version"]):
		r.add("version", at(f["version"], root), `is required: Tinkerbell templates are version "0.1"`)
	case t.Version == "", t.Version == "0.1", r.templated(t.Version):
	default:
		r.add("version", f["version"], `%s is not a supported version; use "0.1"`, quote(t.Version))
	}
	t.Name = r.name("name", f, root)
	t.GlobalTimeout = int(r.seconds("global_timeout", f["global_timeout"]))
	t.ToggleNetboot = r.boolean("toggle_netboot", f["toggle_netboot"])
	r.str("id", f["id"])

	tasks := resolve(f["tasks"])
	switch {
	case isNull(tasks):
		r.add("tasks", at(tasks, root), "needs at least one task")
		return t
	case tasks.Kind != yaml.SequenceNode:
		r.add("tasks", tasks, "must be a list of tasks, not %s", kindName(tasks))
		return t
	case len(tasks.Content) == 0:
		r.add("tasks", tasks, "needs at least one task")
	}
	names := map[string]int{}
	for i, n := range tasks.Content {
		t.Tasks = append(t.Tasks, r.task(index("tasks", i), n, i, names))
	}
	return t
}

// task reads tasks[i]; names maps the task names seen so far to their
// index.
func (r *yamlReader) task(path string, n *yaml.Node, i int, names map[string]int) Task {
	n = resolve(n)
	if isNull(n) {
		r.add(path, n, "is empty; a task needs a name, a worker and actions")
		return Task{}
	}
	f := r.fields(path, n, taskKeys)
	if f == nil {
		return Task{}
	}
	t := Task{
		Name:        r.name(path+".name", f, n),
		Worker:      r.str(path+".worker", f["worker"]),
		Volumes:     r.volumes(path+".volumes", f["volumes"]),
		Environment: r.environment(path+".environment", f["environment"]),
	}
	if t.Name != "" {
		if first, dup := names[t.Name]; dup {
			r.add(path+".name", f["name"], "%s is already the name of tasks[%d]", quote(t.Name), first)
		} else {
			names[t.Name] = i
		}
	}
	switch {
	case t.Worker == "" && missing(f["worker"]):
		r.add(path+".worker", at(f["worker"], n), `is required: the MAC or IP of the machine, usually "{{.device_1}}"`)
	case t.Worker == "", r.templated(t.Worker):
	case workerProblem(t.Worker) != "":
		msg := workerProblem(t.Worker)
		if !r.rendered {
			msg += ` (or a template expression like "{{.device_1}}")`
		}
		r.add(path+".worker", f["worker"], "%s", msg)
	}
	actions := resolve(f["actions"])
	switch {
	case isNull(actions):
		r.add(path+".actions", at(actions, n), "needs at least one action")
		return t
	case actions.Kind != yaml.SequenceNode:
		r.add(path+".actions", actions, "must be a list of actions, not %s", kindName(actions))
		return t
	case len(actions.Content) == 0:
		r.add(path+".actions", actions, "needs at least one action")
	}
	actionNames := map[string]int{}
	for j, an := range actions.Content {
		t.Actions = append(t.Actions, r.action(index(path+".actions", j), an, j, actionNames))
	}
	return t
}

func workerProblem(w string) string {
	if _, err := NormalizeMAC(w); err == nil {
		return ""
	}
	if _, msg := parseIP(w); msg == "" {
		return ""
	}
	return fmt.Sprintf("%s is not a MAC or IP address", quote(w))
}

// action reads one action of a task; names maps the task's action names
// seen so far to their index.
func (r *yamlReader) action(path string, n *yaml.Node, i int, names map[string]int) Action {
	n = resolve(n)
	if isNull(n) {
		r.add(path, n, "is empty; an action needs a name and an image")
		return Action{}
	}
	f := r.fields(path, n, actionKeys)
	if f == nil {
		return Action{}
	}
	a := Action{
		Name:        r.name(path+".name", f, n),
		Image:       r.str(path+".image", f["image"]),
		Timeout:     r.seconds(path+".timeout", f["timeout"]),
		Command:     r.list(path+".command", f["command"]),
		OnTimeout:   r.list(path+".on-timeout", f["on-timeout"]),
		OnFailure:   r.list(path+".on-failure", f["on-failure"]),
		Volumes:     r.volumes(path+".volumes", f["volumes"]),
		Environment: r.environment(path+".environment", f["environment"]),
		Pid:         r.str(path+".pid", f["pid"]),
	}
	if a.Name != "" {
		tasksPath := path[:strings.LastIndexByte(path, '[')]
		if first, dup := names[a.Name]; dup {
			r.add(path+".name", f["name"], "%s is already the name of %s", quote(a.Name), index(tasksPath, first))
		} else {
			names[a.Name] = i
		}
	}
	if (a.Image != "" || missing(f["image"])) && !r.templated(a.Image) {
		if msg := imageProblem(a.Image); msg != "" {
			r.add(path+".image", at(f["image"], n), "%s", msg)
		}
	}
	if a.Pid != "" && a.Pid != "host" && !r.templated(a.Pid) {
		r.add(path+".pid", f["pid"], `%s is not supported; leave pid out or set it to "host"`, quote(a.Pid))
	}
	return a
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
