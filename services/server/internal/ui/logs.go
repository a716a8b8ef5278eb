package ui

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/workflow"
)

// The machine page shows at most maxLogLinesShown lines of each action,
// the last ones, and at most maxLogTextShown bytes of a line: the server
// keeps up to 10,000 lines of 4 KiB an action, more than a page should
// carry.
const (
	maxLogLinesShown = 500
	maxLogTextShown  = 1024
)

// logLine is one output line as the page shows it.
type logLine struct {
	Time   string `json:"time"`
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// actionLog is one action's output on the page: its last lines, and how
// many earlier ones were left out.
type actionLog struct {
	Task    string    `json:"task"`
	Action  string    `json:"action"`
	Lines   []logLine `json:"lines"`
	Omitted int       `json:"omitted"`
}

// actionLogs gathers chunks of lines into one log per action, in the
// order the actions first appear, keeping each action's last maxLines
// lines, each cut to maxText bytes.
type actionLogs struct {
	maxLines, maxText int
	order             []*actionLog
	byAction          map[[2]string]*actionLog
}

func newActionLogs(maxLines, maxText int) *actionLogs {
	return &actionLogs{maxLines: maxLines, maxText: maxText, byAction: map[[2]string]*actionLog{}}
}

func (a *actionLogs) add(chunk *workflow.ActionLogs) {
	key := [2]string{chunk.GetTaskName(), chunk.GetActionName()}
	l := a.byAction[key]
	if l == nil {
		l = &actionLog{Task: key[0], Action: key[1], Lines: []logLine{}}
		a.byAction[key] = l
		a.order = append(a.order, l)
	}
	for _, ln := range chunk.GetLines() {
		text := ln.GetText()
		if len(text) > a.maxText {
			text = text[:a.maxText] + "…"
		}
		at := ""
		if ln.GetTime() != nil {
			at = ln.GetTime().AsTime().UTC().Format(time.TimeOnly)
		}
		l.Lines = append(l.Lines, logLine{Time: at, Stream: ln.GetStream(), Text: text})
		if len(l.Lines) > a.maxLines {
			drop := len(l.Lines) - a.maxLines
			l.Lines = append(l.Lines[:0], l.Lines[drop:]...)
			l.Omitted += drop
		}
	}
}

// workflowLogs answers a workflow's action output so far as JSON
// (ShowActionLogs, with the session's token). The API keeps lines, it
// does not stream them as they come: the page asks again on each of the
// workflow's events.
func (h *Handler) workflowLogs(w http.ResponseWriter, r *http.Request, s session) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		http.Error(w, "the workflow id is not a UUID", http.StatusBadRequest)
		return
	}
	stream, err := h.api.wf.ShowActionLogs(h.asOperator(r.Context(), s.token), &workflow.ActionLogsRequest{WorkflowId: id})
	if err != nil {
		http.Error(w, "the logs of workflow "+id+": "+status.Convert(err).Message(), httpStatus(err))
		return
	}
	logs := newActionLogs(maxLogLinesShown, maxLogTextShown)
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			http.Error(w, "the logs of workflow "+id+": "+status.Convert(err).Message(), httpStatus(err))
			return
		}
		logs.add(chunk)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(logs.order)
}
