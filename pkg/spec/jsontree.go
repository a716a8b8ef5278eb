package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxJSONDepth bounds nesting in hardware JSON (metadata included); real
// metadata documents are a handful of levels deep.
const maxJSONDepth = 64

// jsonObject is a decoded JSON object that keeps its key order, so metadata
// is stored the way the operator wrote it.
type jsonObject struct {
	keys []string
	vals map[string]any
}

// jsonDecoder turns JSON text into a tree of *jsonObject, []any, string,
// json.Number, bool and nil, refusing duplicate keys (encoding/json keeps
// the last one silently) and reporting where in the document it failed.
type jsonDecoder struct {
	src  []byte
	dec  *json.Decoder
	root string
}

// decodeJSON decodes exactly one JSON value. root names the document in
// errors about it as a whole ("hardware", "metadata"); prefix starts the
// paths of the fields inside it ("" for a hardware document, whose fields
// are id, network..., and "metadata" for metadata text).
func decodeJSON(src []byte, root, prefix string) (any, error) {
	d := &jsonDecoder{src: src, dec: json.NewDecoder(bytes.NewReader(src)), root: root}
	d.dec.UseNumber()
	v, err := d.value(prefix, 0)
	if err != nil {
		return nil, err
	}
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, d.syntax(prefix, errors.New("unexpected data after the JSON value"))
	}
	return v, nil
}

// field names a path in errors, the whole document when it is empty.
func (d *jsonDecoder) field(path string) string {
	if path == "" {
		return d.root
	}
	return path
}

func (d *jsonDecoder) value(path string, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, &FieldError{Field: d.field(path), Problem: fmt.Sprintf("nested more than %d levels deep", maxJSONDepth)}
	}
	tok, err := d.dec.Token()
	if err != nil {
		return nil, d.syntax(path, err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return d.object(path, depth)
		case '[':
			return d.array(path, depth)
		}
		return nil, d.syntax(path, fmt.Errorf("unexpected %q", rune(t)))
	default:
		return t, nil
	}
}

func (d *jsonDecoder) object(path string, depth int) (any, error) {
	o := &jsonObject{vals: map[string]any{}}
	for d.dec.More() {
		tok, err := d.dec.Token()
		if err != nil {
			return nil, d.syntax(path, err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, d.syntax(path, errors.New("object key is not a string"))
		}
		p := child(path, key)
		if _, dup := o.vals[key]; dup {
			return nil, &FieldError{Field: p, Problem: "appears more than once in the same object"}
		}
		v, err := d.value(p, depth+1)
		if err != nil {
			return nil, err
		}
		o.keys = append(o.keys, key)
		o.vals[key] = v
	}
	if _, err := d.dec.Token(); err != nil {
		return nil, d.syntax(path, err)
	}
	return o, nil
}

func (d *jsonDecoder) array(path string, depth int) (any, error) {
	list := []any{}
	for d.dec.More() {
		v, err := d.value(index(path, len(list)), depth+1)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	if _, err := d.dec.Token(); err != nil {
		return nil, d.syntax(path, err)
	}
	return list, nil
}

// syntax reports a JSON syntax error at its line and column.
func (d *jsonDecoder) syntax(path string, err error) error {
	off := d.dec.InputOffset()
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	msg := err.Error()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		msg = "unexpected end of input"
		off = int64(len(d.src))
	}
	line, col := lineCol(d.src, off)
	return &FieldError{Field: d.field(path), Problem: fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, strings.TrimPrefix(msg, "json: "))}
}

func lineCol(src []byte, off int64) (int, int) {
	if off > int64(len(src)) {
		off = int64(len(src))
	}
	if off < 0 {
		off = 0
	}
	before := src[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// kindOf names a decoded value's JSON type for error messages.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case *jsonObject:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// writeJSON writes v compactly, keeping object key order and number text.
func writeJSON(buf *bytes.Buffer, v any) {
	switch t := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		if t {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case json.Number:
		buf.WriteString(t.String())
	case string:
		writeJSONString(buf, t)
	case []any:
		buf.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSON(buf, e)
		}
		buf.WriteByte(']')
	case *jsonObject:
		buf.WriteByte('{')
		for i, k := range t.keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(buf, k)
			buf.WriteByte(':')
			writeJSON(buf, t.vals[k])
		}
		buf.WriteByte('}')
	}
}

// writeJSONString quotes s as JSON without encoding/json's HTML escaping,
// so "<" in metadata stays "<".
func writeJSONString(buf *bytes.Buffer, s string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	buf.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
