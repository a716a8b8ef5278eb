package ui

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestTemplateProblems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		msg   string
		lines int
		want  []problem
	}{
		{"one at a line", `tasks[0].actions[0].image: "UPPER" is not an image reference (line 8)`, 10,
			[]problem{{8, `tasks[0].actions[0].image: "UPPER" is not an image reference (line 8)`}}},
		{"several, one a line", "tasks[0].actions[0].imag: unknown field (line 8)\ntasks[0].actions[0].image: is required (line 7)\n", 9,
			[]problem{{8, "tasks[0].actions[0].imag: unknown field (line 8)"}, {7, "tasks[0].actions[0].image: is required (line 7)"}}},
		{"no line", "template: is empty", 1, []problem{{0, "template: is empty"}}},
		{"the last line counts", "name: is required (line 3)", 3, []problem{{3, "name: is required (line 3)"}}},
		{"past the text", "x: y (line 4)", 3, []problem{{0, "x: y (line 4)"}}},
		{"line 0", "x: y (line 0)", 3, []problem{{0, "x: y (line 0)"}}},
		{"only the end names the line", `name: appears twice (first at line 2) (line 3)`, 5, []problem{{3, "name: appears twice (first at line 2) (line 3)"}}},
		{"a quoted value is not a line", `name: "(line 2)" is bad`, 5, []problem{{0, `name: "(line 2)" is bad`}}},
		{"a huge number", "x: y (line 99999999999999999999)", 5, []problem{{0, "x: y (line 99999999999999999999)"}}},
		{"empty message", "", 5, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := templateProblems(tc.msg, tc.lines); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestGutter(t *testing.T) {
	got := gutter(4, []problem{{2, "a (line 2)"}, {0, "whole"}, {2, "b (line 2)"}, {4, "c (line 4)"}})
	want := []gutterLine{{1, ""}, {2, "a (line 2)\nb (line 2)"}, {3, ""}, {4, "c (line 4)"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestLineCountAndFormText(t *testing.T) {
	for in, want := range map[string]int{"": 1, "a": 1, "a\n": 2, "a\nb": 2, "\n\n": 3} {
		if got := lineCount(in); got != want {
			t.Errorf("lineCount(%q) = %d, want %d", in, got, want)
		}
	}
	if got := formText("a\r\nb\r\n\rc"); got != "a\nb\n\rc" {
		t.Errorf("formText = %q", got)
	}
}

func TestLimitBody(t *testing.T) {
	reached := false
	h := limitBody(16, func(w http.ResponseWriter, r *http.Request) { reached = true })
	for _, tc := range []struct {
		name string
		body string
		code int
	}{
		{"within", "data=0123456789", http.StatusOK},
		{"past", "data=0123456789abcdef", http.StatusRequestEntityTooLarge},
		{"not a form", "data=%zz", http.StatusBadRequest},
	} {
		reached = false
		req := httptest.NewRequest(http.MethodPost, "/ui/templates", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h(rec, req)
		if rec.Code != tc.code || reached != (tc.code == http.StatusOK) {
			t.Errorf("%s: %d (handler reached: %v), want %d", tc.name, rec.Code, reached, tc.code)
		}
	}
}
