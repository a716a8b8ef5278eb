package spec

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem with one field of an operator's file or request.
type FieldError struct {
	// Field is the path of the field as written in the file, e.g.
	// network.interfaces[1].dhcp.mac or tasks[0].actions[2].image. The whole
	// document is "hardware" or "template".
	Field string
	// Problem says what is wrong, in words an operator can act on.
	Problem string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Problem
	}
	return e.Field + ": " + e.Problem
}

// maxReported bounds how many problems one validation reports; a file that is
// wrong everywhere gets the first ones and a count of the rest.
const maxReported = 20

// problems collects FieldErrors in the order they are found.
type problems struct {
	list  []error
	extra int
}

func (p *problems) add(field, format string, args ...any) {
	if len(p.list) >= maxReported {
		p.extra++
		return
	}
	p.list = append(p.list, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

func (p *problems) empty() bool { return len(p.list) == 0 }

// err returns nil, the single error, or all of them joined.
func (p *problems) err(root string) error {
	switch {
	case len(p.list) == 0:
		return nil
	case len(p.list) == 1 && p.extra == 0:
		return p.list[0]
	}
	list := p.list
	if p.extra > 0 {
		list = append(list[:len(list):len(list)], &FieldError{Field: root, Problem: fmt.Sprintf("%d more problems not shown", p.extra)})
	}
	return errors.Join(list...)
}

// quote shows a value the operator wrote, shortened when long so one bad
// field cannot flood a log line.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q...", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// suggest returns ` (did you mean "x"?)` when name is a likely typo of one of
// the known field names, else the list of known names.
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field; did you mean %q?", best)
	}
	return "unknown field; known fields are " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance, for typo suggestions only.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// child appends a map key to a field path, quoting keys that are not plain
// identifiers so the path stays unambiguous.
func child(path, key string) string {
	plain := key != ""
	for _, r := range key {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			plain = false
			break
		}
	}
	switch {
	case !plain:
		return fmt.Sprintf("%s[%q]", path, key)
	case path == "":
		return key
	}
	return path + "." + key
}

// index appends a list index to a field path.
func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
