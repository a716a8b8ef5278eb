package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/proto/workflow"
)

func (a *app) workflowCmd() *cobra.Command {
	cmd := group("workflow", "Create workflows and follow them",
		`A workflow is a template rendered for one or more machines (its devices). The
machines' workers run its actions in order and report each one; "workflow watch"
follows that live.`)
	cmd.AddCommand(a.workflowCreateCmd(), a.workflowGetCmd(), a.workflowListCmd(), a.workflowDeleteCmd(),
		a.workflowStateCmd(), a.workflowEventsCmd(), a.workflowLogsCmd(), a.workflowDataCmd(), a.workflowWatchCmd())
	return cmd
}

// parseDevices checks the --hardware map: a JSON object from template
// device names to MAC or IP addresses. It returns the map as canonical
// JSON (sorted keys, lower-case MACs, canonical IPs).
func parseDevices(s string) (string, error) {
	var devices map[string]string
	if err := json.Unmarshal([]byte(s), &devices); err != nil {
		return "", usagef(`--hardware %s: want a JSON object of device name to MAC or IP address, e.g. {"device_1":"08:00:27:00:00:01"}`, s)
	}
	if len(devices) == 0 {
		return "", usagef("--hardware: no devices: name at least one, e.g. {\"device_1\":\"08:00:27:00:00:01\"}")
	}
	names := make([]string, 0, len(devices))
	for name := range devices {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := devices[name]
		if name == "" {
			return "", usagef("--hardware: empty device name")
		}
		if mac, err := spec.NormalizeMAC(v); err == nil {
			devices[name] = mac
			continue
		}
		if ip, err := netip.ParseAddr(v); err == nil {
			devices[name] = ip.String()
			continue
		}
		return "", usagef("--hardware: %s: %q is neither a MAC nor an IP address", name, v)
	}
	b, err := json.Marshal(devices)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func (a *app) workflowCreateCmd() *cobra.Command {
	var (
		tmpl, devices string
		toggle        bool
		netboot, efi  bool
	)
	cmd := &cobra.Command{
		Use:   "create -t TEMPLATE -r DEVICES",
		Short: "Create a workflow from a template for some machines",
		Long: `Create renders the template (by id or name) for the machines named in DEVICES,
a JSON object from the template's device variables to MAC or IP addresses, and
prints the new workflow's id.

herd-server switches the machines' netboot itself (Tinkerbell's
toggleAllowNetboot): it sets allow_pxe on their hardware records now and clears
it when the workflow succeeds (after a failure or timeout it stays on, for a
retry), noting each change in the workflow's events. --toggle-netboot=false
leaves allow_pxe to you; without the flag the template's toggle_netboot key
decides, and without that the server toggles.

--netboot then starts the workflow without a hand on the power button: for each
machine, a BMC job (herd machine netboot) sets its next boot to the network and
power cycles it; the workflow's events show the job's steps. The command waits
for those jobs and fails if one does not succeed (the workflow stays, waiting).`,
		Example: `  herd workflow create -t hello-world -r '{"device_1":"08:00:27:00:00:01"}'
  herd workflow create -t hello-world -r '{"device_1":"08:00:27:00:00:01"}' --toggle-netboot=false
  herd workflow create -t ubuntu -r '{"device_1":"08:00:27:00:00:01"}' --netboot`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&tmpl, "template", "t", "", "template id or name (required)")
	cmd.Flags().StringVarP(&devices, "hardware", "r", "", `devices as JSON, e.g. '{"device_1":"08:00:27:00:00:01"}' (required)`)
	// Its value counts only when given (Changed); false here keeps pflag
	// from printing a default the template may override.
	cmd.Flags().BoolVar(&toggle, "toggle-netboot", false,
		"the server switches the machines' allow_pxe on now and off at SUCCESS; --toggle-netboot=false leaves it alone (unset: the template's toggle_netboot, else on)")
	cmd.Flags().BoolVar(&netboot, "netboot", false, "start the workflow by the machines' BMCs: next boot from the network, then a power cycle")
	cmd.Flags().BoolVar(&efi, "efi", false, "with --netboot: boot in UEFI mode, not legacy BIOS")
	_ = cmd.MarkFlagRequired("template")
	_ = cmd.MarkFlagRequired("hardware")
	cmd.RunE = a.action(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
		if efi && !netboot {
			return usagef("--efi goes with --netboot")
		}
		if tmpl == "" {
			return usagef("--template is empty")
		}
		hw, err := parseDevices(devices)
		if err != nil {
			return err
		}
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		req := &workflow.CreateRequest{Template: tmpl, Hardware: hw}
		// Unset unless given, so the template's toggle_netboot can decide.
		if cmd.Flags().Changed("toggle-netboot") {
			req.ToggleNetboot = &toggle
		}
		resp, err := c.CreateWorkflow(ctx, req)
		if err != nil {
			return err
		}
		if a.set.json {
			err = writeProto(a.stdout, resp, false)
		} else {
			_, err = fmt.Fprintf(a.stdout, "Created Workflow: %s\n", resp.GetId())
		}
		if err != nil || !netboot {
			return err
		}
		return a.netbootWorkflow(ctx, resp.GetId(), hw, efi)
	})
	return cmd
}

// netbootWorkflow queues a netboot job for each machine of the workflow
// (found by the MAC or IP its devices name) and follows them all.
func (a *app) netbootWorkflow(ctx context.Context, wfID, devices string, efi bool) error {
	var byName map[string]string
	if err := json.Unmarshal([]byte(devices), &byName); err != nil {
		return err
	}
	hc, err := a.hardwareClient(ctx)
	if err != nil {
		return err
	}
	mc, err := a.machineClient(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	var jobs []*machine.Job
	for _, name := range names {
		addr := byName[name]
		var hw *hardware.Hardware
		if _, err := netip.ParseAddr(addr); err == nil {
			hw, err = hc.ByIP(ctx, &hardware.GetRequest{Ip: addr})
		} else {
			hw, err = hc.ByMAC(ctx, &hardware.GetRequest{Mac: addr})
		}
		if err != nil {
			return fmt.Errorf("workflow %s created, not started: %s (%s): %w", wfID, name, addr, err)
		}
		if hw.GetId() == "" {
			return fmt.Errorf("workflow %s created, not started: %s (%s): no hardware record has that address", wfID, name, addr)
		}
		if seen[hw.GetId()] {
			continue
		}
		seen[hw.GetId()] = true
		j, err := mc.Netboot(ctx, &machine.NetbootRequest{HardwareId: hw.GetId(), Efi: efi, WorkflowId: wfID})
		if err != nil {
			return fmt.Errorf("workflow %s created, not started: netboot of %s (hardware %s): %w", wfID, name, hw.GetId(), err)
		}
		jobs = append(jobs, j)
	}
	var failed []string
	for _, j := range jobs {
		end, err := a.followJob(ctx, mc, j.GetId())
		if err != nil {
			return err
		}
		if end.GetState() != machine.JobState_JOB_STATE_SUCCESS {
			failed = append(failed, fmt.Sprintf("hardware %s: %s %s", end.GetHardwareId(), jobState(end), end.GetMessage()))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("workflow %s created, but its netboot failed: %s", wfID, strings.Join(failed, "; "))
	}
	return nil
}

func (a *app) workflowGetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a workflow's rendered template",
		Long: `Get prints the workflow's template as rendered for its machines; with -o json
the whole record (template id, devices, state, times, data).`,
		Args: idArg("workflow"),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		wf, err := c.GetWorkflow(ctx, &workflow.GetRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, wf, false)
		}
		return writeText(a.stdout, wf.GetData())
	})
	return cmd
}

func (a *app) workflowListCmd() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List workflows",
		Long:  `List prints every workflow; with -o json, one JSON document per line.`,
		Args:  cobra.NoArgs,
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the ids")
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, _ []string) error {
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		stream, err := c.ListWorkflows(ctx, &workflow.Empty{})
		if err != nil {
			return err
		}
		switch {
		case quiet:
			return each(stream, func(wf *workflow.Workflow) error {
				_, err := fmt.Fprintln(a.stdout, wf.GetId())
				return err
			})
		case a.set.json:
			return each(stream, func(wf *workflow.Workflow) error {
				return writeProto(a.stdout, wf, true)
			})
		}
		t := newTable(a.stdout, "ID", "TEMPLATE", "HARDWARE", "STATE", "CREATED AT", "UPDATED AT")
		err = each(stream, func(wf *workflow.Workflow) error {
			t.row(wf.GetId(), wf.GetTemplate(), wf.GetHardware(), wf.GetState().String(),
				when(wf.GetCreatedAt()), when(wf.GetUpdatedAt()))
			return nil
		})
		if ferr := t.flush(); err == nil {
			err = ferr
		}
		return err
	})
	return cmd
}

func (a *app) workflowDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a workflow",
		Long:  `Delete marks the workflow deleted: its machines no longer run it. It stays readable.`,
		Args:  idArg("workflow"),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		resp, err := c.DeleteWorkflow(ctx, &workflow.GetRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, resp, false)
		}
		_, err = fmt.Fprintf(a.stdout, "Workflow %s deleted\n", args[0])
		return err
	})
	return cmd
}

func (a *app) workflowStateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state ID",
		Short: "Show where a workflow stands",
		Long: `State prints the workflow's progress (share of actions finished) and its current
task, action, worker and action state.`,
		Args: idArg("workflow"),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		wc, err := c.GetWorkflowContext(ctx, &workflow.GetRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, wc, false)
		}
		t := newTable(a.stdout, "FIELD NAME", "VALUES")
		t.row("Workflow ID", wc.GetWorkflowId())
		t.row("Workflow Progress", strconv.Itoa(progress(wc))+"%")
		t.row("Current Task", wc.GetCurrentTask())
		t.row("Current Action", wc.GetCurrentAction())
		t.row("Current Worker", wc.GetCurrentWorker())
		t.row("Current Action State", wc.GetCurrentActionState().String())
		return t.flush()
	})
	return cmd
}

// eventsTable and eventRow are the table of workflow events, with tink's
// columns.
func eventsTable(a *app) *table {
	return newTable(a.stdout, "WORKER ID", "TASK NAME", "ACTION NAME", "EXECUTION TIME", "MESSAGE", "ACTION STATUS")
}

func eventRow(t *table, ev *workflow.WorkflowActionStatus) {
	t.row(ev.GetWorkerId(), ev.GetTaskName(), ev.GetActionName(), seconds(ev.GetSeconds()),
		ev.GetMessage(), ev.GetActionStatus().String())
}

func (a *app) workflowEventsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events ID",
		Short: "Show the action reports of a workflow so far",
		Long: `Events prints every action report recorded for the workflow, oldest first; with
-o json one JSON document per line. "workflow watch" follows them live.`,
		Args: idArg("workflow"),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		stream, err := c.ShowWorkflowEvents(ctx, &workflow.GetRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if a.set.json {
			return each(stream, func(ev *workflow.WorkflowActionStatus) error {
				return writeProto(a.stdout, ev, true)
			})
		}
		t := eventsTable(a)
		err = each(stream, func(ev *workflow.WorkflowActionStatus) error {
			eventRow(t, ev)
			return nil
		})
		if ferr := t.flush(); err == nil {
			err = ferr
		}
		return err
	})
	return cmd
}

func (a *app) workflowDataCmd() *cobra.Command {
	var (
		version          int32
		metadata, latest bool
	)
	cmd := &cobra.Command{
		Use:   "data ID",
		Short: "Show the data a workflow's actions shared",
		Long: `Data prints the workflow's data document (JSON written by its actions), the
latest version unless --version says which. --metadata prints who wrote it
instead, --latest-version only the latest version number.`,
		Args: idArg("workflow"),
	}
	f := cmd.Flags()
	f.Int32VarP(&version, "version", "v", 0, "data version to show (0: the latest)")
	f.BoolVarP(&metadata, "metadata", "m", false, "show the metadata of the data (who changed it) instead")
	f.BoolVarP(&latest, "latest-version", "l", false, "show only the latest version number")
	cmd.MarkFlagsMutuallyExclusive("metadata", "latest-version")
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		if version < 0 {
			return usagef("--version %d: must not be negative", version)
		}
		c, err := a.workflowClient(ctx)
		if err != nil {
			return err
		}
		req := &workflow.GetWorkflowDataRequest{WorkflowId: args[0], Version: version}
		get := c.GetWorkflowData
		switch {
		case metadata:
			get = c.GetWorkflowMetadata
		case latest:
			get = c.GetWorkflowDataVersion
		}
		resp, err := get(ctx, req)
		if err != nil {
			return err
		}
		switch {
		case a.set.json:
			return writeProto(a.stdout, resp, false)
		case latest:
			_, err = fmt.Fprintf(a.stdout, "Latest workflow data version: %d\n", resp.GetVersion())
			return err
		}
		return writeText(a.stdout, string(resp.GetData()))
	})
	return cmd
}
