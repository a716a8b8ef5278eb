package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/workflow"
)

// Reconnecting after the event stream broke: first wait, longest wait,
// and how long to keep trying without receiving anything.
const (
	reconnectFirst = 500 * time.Millisecond
	reconnectMax   = 5 * time.Second
	reconnectFor   = 2 * time.Minute
)

func (a *app) workflowWatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a workflow live until it ends",
		Long: `Watch prints the workflow's action reports as the workers send them (those
recorded so far first): time, task, action, state and, once an action ends, how
long it ran. It returns when the workflow ends, with exit code 0 for SUCCESS,
3 for FAILED and 4 for TIMEOUT. It waits without limit unless --timeout is
given, and reconnects if the connection to herd-server breaks.
With -o json, each report is printed as one JSON document per line.`,
		Example:     `  herd workflow watch 3d5a7f7e-2b8a-4f59-9a61-3b0f0c3b8f4c && echo provisioned`,
		Args:        idArg("workflow"),
		Annotations: map[string]string{waitsForever: "yes"},
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		return a.watch(ctx, args[0])
	})
	return cmd
}

// watch follows workflow id's events until the server ends the stream,
// then decides the outcome from the workflow's final state.
func (a *app) watch(ctx context.Context, id string) error {
	c, err := a.workflowClient(ctx)
	if err != nil {
		return err
	}
	// Fail fast on an unknown id or an unreachable server; after this, an
	// Unavailable stream is a broken connection worth re-establishing.
	if _, err := c.GetWorkflow(ctx, &workflow.GetRequest{Id: id}); err != nil {
		return err
	}
	var (
		seen    int // events printed; each new stream replays from the start
		last    *workflow.WorkflowActionStatus
		ran     time.Duration // the sum of the finished actions' run times
		wait    = reconnectFirst
		lastGot = time.Now()
	)
	show := func(ev *workflow.WorkflowActionStatus) error {
		last = ev
		if final(ev.GetActionStatus()) {
			ran += time.Duration(ev.GetSeconds()) * time.Second
		}
		if a.set.json {
			return writeProto(a.stdout, ev, true)
		}
		return writeWatchLine(a.stdout, ev)
	}
	for {
		n := 0
		stream, err := c.WatchWorkflowEvents(ctx, &workflow.GetRequest{Id: id})
		if err == nil {
			err = each(stream, func(ev *workflow.WorkflowActionStatus) error {
				n++
				lastGot, wait = time.Now(), reconnectFirst
				if n <= seen {
					return nil
				}
				seen = n
				return show(ev)
			})
		}
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		if time.Since(lastGot) > reconnectFor {
			return fmt.Errorf("lost herd-server for %s: %s", reconnectFor, status.Convert(err).Message())
		}
		fmt.Fprintf(a.stderr, "herd: event stream broken (%s), reconnecting in %s\n", status.Convert(err).Message(), wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, reconnectMax)
	}

	wf, err := c.GetWorkflow(ctx, &workflow.GetRequest{Id: id})
	if err != nil {
		return err
	}
	return watchOutcome(a.stdout, wf, last, ran, a.set.json)
}

// writeWatchLine prints one event as a line of the live view.
func writeWatchLine(w io.Writer, ev *workflow.WorkflowActionStatus) error {
	at := "--:--:--"
	if ev.GetCreatedAt() != nil {
		at = ev.GetCreatedAt().AsTime().UTC().Format("15:04:05")
	}
	line := fmt.Sprintf("%s  %-20s %-24s %-8s", at, ev.GetTaskName(), ev.GetActionName(), stateName(ev.GetActionStatus()))
	if final(ev.GetActionStatus()) {
		line += " " + seconds(ev.GetSeconds())
	}
	if m := ev.GetMessage(); m != "" {
		line += "  " + m
	}
	_, err := fmt.Fprintln(w, trimRight(line))
	return err
}

// watchOutcome reports how the workflow ended: a summary line (table
// output) and nil for SUCCESS, an exitError for FAILED and TIMEOUT, an
// error when the stream ended although the workflow had not.
func watchOutcome(w io.Writer, wf *workflow.Workflow, last *workflow.WorkflowActionStatus, ran time.Duration, jsonOut bool) error {
	where := ""
	if last != nil && last.GetActionStatus() == wf.GetState() {
		where = fmt.Sprintf(" at %s/%s", last.GetTaskName(), last.GetActionName())
		if m := last.GetMessage(); m != "" {
			where += ": " + m
		}
	}
	switch wf.GetState() {
	case workflow.State_STATE_SUCCESS:
		if !jsonOut {
			_, err := fmt.Fprintf(w, "Workflow %s SUCCESS (actions ran %s)\n", wf.GetId(), ran)
			return err
		}
		return nil
	case workflow.State_STATE_FAILED:
		return exitError{code: ExitFailed, msg: fmt.Sprintf("workflow %s FAILED%s", wf.GetId(), where)}
	case workflow.State_STATE_TIMEOUT:
		return exitError{code: ExitTimedOut, msg: fmt.Sprintf("workflow %s TIMEOUT%s", wf.GetId(), where)}
	}
	return errors.New("herd-server ended the event stream while workflow " + wf.GetId() + " is " + stateName(wf.GetState()))
}

func trimRight(s string) string {
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}
