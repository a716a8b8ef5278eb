package ui

import (
	"fmt"
	"strings"
	"testing"

	"github.com/herd-metal/herd/proto/workflow"
)

func chunk(task, action string, texts ...string) *workflow.ActionLogs {
	c := &workflow.ActionLogs{TaskName: task, ActionName: action}
	for _, t := range texts {
		c.Lines = append(c.Lines, &workflow.LogLine{Stream: "stdout", Text: t})
	}
	return c
}

func TestActionLogs(t *testing.T) {
	many := make([]string, 7)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	for _, tc := range []struct {
		name   string
		chunks []*workflow.ActionLogs
		want   string
	}{
		{"none", nil, ""},
		{"actions in first-seen order, chunks joined", []*workflow.ActionLogs{chunk("t", "b", "1"), chunk("t", "a", "x"), chunk("t", "b", "2")},
			"t/b 0 [1 2];t/a 0 [x]"},
		{"the last lines kept, the rest counted", []*workflow.ActionLogs{chunk("t", "a", many[:3]...), chunk("t", "a", many[3:]...)},
			"t/a 2 [2 3 4 5 6]"},
		{"a long line cut", []*workflow.ActionLogs{chunk("t", "a", "abcdefghij")}, "t/a 0 [abcdefgh…]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newActionLogs(5, 8)
			for _, c := range tc.chunks {
				l.add(c)
			}
			var got []string
			for _, a := range l.order {
				var texts []string
				for _, ln := range a.Lines {
					texts = append(texts, ln.Text)
				}
				got = append(got, fmt.Sprintf("%s/%s %d [%s]", a.Task, a.Action, a.Omitted, strings.Join(texts, " ")))
			}
			if g := strings.Join(got, ";"); g != tc.want {
				t.Fatalf("got %q, want %q", g, tc.want)
			}
		})
	}
}
