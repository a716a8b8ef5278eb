package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/herd-metal/herd/proto/workflow"
)

func (a *app) workflowLogsCmd() *cobra.Command {
	var task, action string
	cmd := &cobra.Command{
		Use:   "logs ID [--task TASK] [--action ACTION]",
		Short: "Show the output of a workflow's action containers",
		Long: `Logs prints the output lines the workers sent of each action's container, in
action order, each line prefixed with its time, task/action and stream; with
-o json one JSON document per chunk of lines.`,
		Args: idArg("workflow"),
	}
	cmd.Flags().StringVar(&task, "task", "", "only this task")
	cmd.Flags().StringVar(&action, "action", "", "only this action")
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		stream, err := c.ShowActionLogs(ctx, &workflow.ActionLogsRequest{WorkflowId: args[0], TaskName: task, ActionName: action})
		if err != nil {
			return err
		}
		return each(stream, func(l *workflow.ActionLogs) error {
			if a.set.json {
				return writeProto(a.stdout, l, true)
			}
			for _, ln := range l.GetLines() {
				at := "--:--:--"
				if ln.GetTime() != nil {
					at = ln.GetTime().AsTime().UTC().Format("15:04:05")
				}
				if _, err := fmt.Fprintf(a.stdout, "%s %s/%s %s: %s\n", at, l.GetTaskName(), l.GetActionName(), ln.GetStream(), ln.GetText()); err != nil {
					return err
				}
			}
			return nil
		})
	})
	return cmd
}
