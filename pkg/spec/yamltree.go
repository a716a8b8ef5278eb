package spec

// Reading YAML as the operator wrote it: a node tree walked by hand, so
// every problem names its field path and line, unknown and repeated keys
// are caught, and aliases cannot blow up.

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yamlRoot parses exactly one YAML document and returns its top node.
func yamlRoot(text string) (*yaml.Node, error) {
	dec := yaml.NewDecoder(strings.NewReader(text))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Field: "template", Problem: "is empty"}
		}
		return nil, yamlSyntax(text, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, &FieldError{Field: "template", Problem: atLine("holds more than one YAML document (a second \"---\"); put one template in a file", next.Line)}
	case !errors.Is(err, io.EOF):
		return nil, yamlSyntax(text, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &FieldError{Field: "template", Problem: "is empty"}
	}
	return doc.Content[0], nil
}

// yamlSyntax words a YAML syntax error the way every other problem is
// worded: the problem, then its line ("yaml: line 3: did not find ..."
// becomes "is not valid YAML: did not find ... (line 5)"). yaml.v3 names
// the line where the block around the problem begins, which for a
// mis-indented key is lines above it; up to maxBisectBytes the line is
// the one the text breaks at.
func yamlSyntax(text string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, after
			}
		}
	}
	if len(text) <= maxBisectBytes {
		line = brokenLine(text)
	}
	return &FieldError{Field: "template", Problem: atLine("is not valid YAML: "+msg, line)}
}

// maxBisectBytes bounds the text brokenLine searches: a 64 KiB text
// took about 70 ms of parses on the 2-core test machine; templates are a
// few KiB.
const maxBisectBytes = 64 << 10

// brokenLine is the line at which text stops being YAML: the first k such
// that its first k lines do not parse while its first k-1 do. Found by
// bisection (a few parses, each stopping at its own error); text itself
// must not parse.
func brokenLine(text string) int {
	ends := []int{0} // ends[k] is the length of the first k lines
	for i := 0; i < len(text); i++ {
		if text[i] == '\n' {
			ends = append(ends, i+1)
		}
	}
	if ends[len(ends)-1] < len(text) {
		ends = append(ends, len(text))
	}
	good, bad := 0, len(ends)-1
	for bad-good > 1 {
		mid := (good + bad) / 2
		if parsesAsYAML(text[:ends[mid]]) {
			good = mid
		} else {
			bad = mid
		}
	}
	return bad
}

// parsesAsYAML reports whether text is a stream of YAML documents.
func parsesAsYAML(text string) bool {
	dec := yaml.NewDecoder(strings.NewReader(text))
	for {
		var doc yaml.Node
		switch err := dec.Decode(&doc); {
		case errors.Is(err, io.EOF):
			return true
		case err != nil:
			return false
		}
	}
}

// atLine ends a problem with the template line it is at, " (line N)", the
// one form the web UI (and an operator's eye) looks for; 0 is no line.
func atLine(problem string, line int) string {
	if line <= 0 {
		return problem
	}
	return fmt.Sprintf("%s (line %d)", problem, line)
}

// checkYAMLSize counts the nodes of the document with aliases expanded,
// and refuses an alias to a node that contains it.
func checkYAMLSize(root *yaml.Node) error {
	const busy = -1
	memo := map[*yaml.Node]int{}
	var size func(n *yaml.Node) (int, error)
	size = func(n *yaml.Node) (int, error) {
		if n == nil {
			return 0, nil
		}
		switch memo[n] {
		case busy:
			return 0, &FieldError{Field: "template", Problem: atLine("has an alias that refers to a node that contains it", n.Line)}
		case 0:
		default:
			return memo[n], nil
		}
		memo[n] = busy
		total := 1
		kids := n.Content
		if n.Kind == yaml.AliasNode {
			kids = []*yaml.Node{n.Alias}
		}
		for _, c := range kids {
			s, err := size(c)
			if err != nil {
				return 0, err
			}
			total += s
			if total > maxYAMLNodes {
				return 0, &FieldError{Field: "template", Problem: fmt.Sprintf("has more than %d YAML nodes once its aliases are expanded", maxYAMLNodes)}
			}
		}
		memo[n] = total
		return total, nil
	}
	_, err := size(root)
	return err
}

// yamlReader walks the YAML nodes of a template, filling a Template and
// recording every problem with its field path.
type yamlReader struct {
	p        problems
	rendered bool
}

// add records a problem; before rendering it points at the YAML line.
func (r *yamlReader) add(path string, n *yaml.Node, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !r.rendered && n != nil {
		msg = atLine(msg, n.Line)
	}
	r.p.add(path, "%s", msg)
}

// templated tells whether a value is still a template expression, to be
// checked after rendering.
func (r *yamlReader) templated(s string) bool {
	return !r.rendered && strings.Contains(s, "{{")
}

// docPath names the path of a field, or the whole template for "".
func docPath(path string) string {
	if path == "" {
		return "template"
	}
	return path
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		// An unquoted {{.device_1}} parses as a flow mapping whose key
		// is another flow mapping.
		if n.Style&yaml.FlowStyle != 0 && len(n.Content) > 0 && n.Content[0].Kind == yaml.MappingNode {
			return `a mapping (quote template expressions: "{{.device_1}}")`
		}
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a string"
	}
	return "an unexpected node"
}

type yamlPair struct {
	key      string
	keyNode  *yaml.Node
	valNode  *yaml.Node
	explicit bool
}

// pairs lists a mapping's keys and values: repeated keys are problems,
// and merge keys ("<<: *defaults") add the keys the mapping lacks.
func (r *yamlReader) pairs(path string, n *yaml.Node) []yamlPair {
	var out, merged []yamlPair
	seen := map[string]int{}
	mergedSeen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			for _, src := range r.mergeSources(path, v) {
				for _, pp := range r.pairs(path, src) {
					if !mergedSeen[pp.key] {
						mergedSeen[pp.key] = true
						merged = append(merged, pp)
					}
				}
			}
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null" {
			r.add(docPath(path), k, "has a key that is not a plain string")
			continue
		}
		if line, dup := seen[k.Value]; dup {
			r.add(child(path, k.Value), k, "appears twice in the same mapping (first at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, yamlPair{key: k.Value, keyNode: k, valNode: v, explicit: true})
	}
	for _, pp := range merged {
		if _, ok := seen[pp.key]; !ok {
			pp.explicit = false
			out = append(out, pp)
		}
	}
	return out
}

func (r *yamlReader) mergeSources(path string, v *yaml.Node) []*yaml.Node {
	v = resolve(v)
	switch v.Kind {
	case yaml.MappingNode:
		return []*yaml.Node{v}
	case yaml.SequenceNode:
		var out []*yaml.Node
		for _, e := range v.Content {
			if e = resolve(e); e.Kind == yaml.MappingNode {
				out = append(out, e)
			} else {
				r.add(docPath(path), e, "a merge key (<<) must refer to mappings")
			}
		}
		return out
	}
	r.add(docPath(path), v, "a merge key (<<) must refer to a mapping or a list of mappings")
	return nil
}

// fields returns a struct-like mapping's values by key, recording unknown
// keys. It returns nil when n is null or not a mapping.
func (r *yamlReader) fields(path string, n *yaml.Node, known []string) map[string]*yaml.Node {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		r.add(docPath(path), n, "must be a mapping, not %s", kindName(n))
		return nil
	}
	out := map[string]*yaml.Node{}
	for _, pp := range r.pairs(path, n) {
		if !slices.Contains(known, pp.key) {
			r.add(child(path, pp.key), pp.keyNode, "%s", suggest(pp.key, known))
			continue
		}
		out[pp.key] = pp.valNode
	}
	return out
}

// str reads a scalar as a string; null or absent is "".
func (r *yamlReader) str(path string, n *yaml.Node) string {
	n = resolve(n)
	if isNull(n) {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		r.add(path, n, "must be a string, not %s", kindName(n))
		return ""
	}
	return n.Value
}

// seconds reads a timeout: a whole number from 0 to MaxTimeoutSeconds.
func (r *yamlReader) seconds(path string, n *yaml.Node) int64 {
	n = resolve(n)
	if isNull(n) {
		return 0
	}
	if n.Kind == yaml.ScalarNode && r.templated(n.Value) {
		return 0
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		what := kindName(n)
		if n.Kind == yaml.ScalarNode {
			what = quote(n.Value)
		}
		r.add(path, n, "must be a whole number of seconds, not %s", what)
		return 0
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		r.add(path, n, "%s is out of range", n.Value)
		return 0
	}
	switch {
	case v < 0:
		r.add(path, n, "%d is negative; give seconds, or 0 for no timeout", v)
		return 0
	case v > MaxTimeoutSeconds:
		r.add(path, n, "%d seconds is more than the limit of %d", v, MaxTimeoutSeconds)
		return 0
	}
	return v
}

// boolean reads an optional true or false (a YAML boolean, unquoted);
// null or absent is nil. Before rendering, a value holding "{{" is left
// for the rendered template.
func (r *yamlReader) boolean(path string, n *yaml.Node) *bool {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind == yaml.ScalarNode && r.templated(n.Value) {
		return nil
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		what := kindName(n)
		if n.Kind == yaml.ScalarNode {
			what = quote(n.Value)
		}
		r.add(path, n, "must be true or false (unquoted), not %s", what)
		return nil
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		r.add(path, n, "%s is not true or false", quote(n.Value))
		return nil
	}
	return &v
}

// list reads a list of strings, each without NUL bytes (they cannot reach
// a process's arguments).
func (r *yamlReader) list(path string, n *yaml.Node) []string {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		r.add(path, n, "must be a list of strings, not %s", kindName(n))
		return nil
	}
	var out []string
	for i, e := range n.Content {
		s := r.str(index(path, i), e)
		if strings.ContainsRune(s, 0) {
			r.add(index(path, i), resolve(e), "contains a NUL character")
		}
		out = append(out, s)
	}
	return out
}

// missing tells whether a required value is absent rather than of the
// wrong type (which str has reported already).
func missing(n *yaml.Node) bool {
	n = resolve(n)
	return isNull(n) || n.Kind == yaml.ScalarNode
}

// at is the node to point at for a field: itself, or its parent mapping
// when the field is absent.
func at(field, parent *yaml.Node) *yaml.Node {
	if field != nil {
		return field
	}
	return parent
}
