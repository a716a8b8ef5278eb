package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/machine"
)

// machineCmd drives machines through their BMCs: every command queues a
// job that herd-bmc runs, then (unless --no-wait) follows it to its end.
func (a *app) machineCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "machine",
		Short: "Power and boot control through the machines' BMCs (jobs run by herd-bmc)",
		Long: `Each command asks herd-server for a BMC job, which herd-bmc runs against the
machine's BMC (the bmc of its hardware record), and follows it until it ends:
SUCCESS, FAILED or TIMEOUT, with the BMC's answer or the reason. --no-wait
prints the job's id at once; herd machine job ID shows it later.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(a.machinePowerCmd(), a.machineBootdevCmd(), a.machineNetbootCmd(),
		a.machineJobCmd(), a.machineJobsCmd())
	return cmd
}

// jobFollow is the --no-wait flag every job command shares.
type jobFollow struct{ noWait bool }

func (f *jobFollow) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.noWait, "no-wait", false, "print the job's id and return at once, without following it")
	// A job ends by itself (the server times it out), so waiting for it
	// needs no --timeout of its own.
	cmd.Annotations = map[string]string{waitsForever: "true"}
}

// ask queues a job by call and prints or follows it (queued).
func (a *app) ask(ctx context.Context, f jobFollow, call func(machine.MachineServiceClient) (*machine.Job, error)) error {
	c, err := a.machineClient(ctx)
	if err != nil {
		return err
	}
	j, err := call(c)
	if err != nil {
		return err
	}
	return a.queued(ctx, c, j, f)
}

// queued prints or follows a new job; a job that did not succeed is the
// command's failure.
func (a *app) queued(ctx context.Context, c machine.MachineServiceClient, j *machine.Job, f jobFollow) error {
	if f.noWait {
		if a.set.json {
			return writeProto(a.stdout, j, false)
		}
		_, err := fmt.Fprintln(a.stdout, j.GetId())
		return err
	}
	end, err := a.followJob(ctx, c, j.GetId())
	if err != nil {
		return err
	}
	if end.GetState() != machine.JobState_JOB_STATE_SUCCESS {
		return fmt.Errorf("job %s ended %s: %s", end.GetId(), jobState(end), end.GetMessage())
	}
	return nil
}

// followJob prints each change of the job until it ends, and returns the
// last one.
func (a *app) followJob(ctx context.Context, c machine.MachineServiceClient, id string) (*machine.Job, error) {
	stream, err := c.WatchJob(ctx, &machine.GetJobRequest{Id: id})
	if err != nil {
		return nil, err
	}
	var last *machine.Job
	for {
		j, err := stream.Recv()
		if err == io.EOF && last != nil {
			return last, nil
		}
		if err != nil {
			return nil, err
		}
		last = j
		if a.set.json {
			if err := writeProto(a.stdout, j, true); err != nil {
				return nil, err
			}
			continue
		}
		if _, err := fmt.Fprintln(a.stdout, jobLine(j)); err != nil {
			return nil, err
		}
	}
}

// jobLine is one line of a job's progress: "2026-12-03T12:00:00Z job ID
// hardware HW power on RUNNING attempt 1".
func jobLine(j *machine.Job) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s job %s hardware %s %s %s", when(j.GetUpdatedAt()), j.GetId(), j.GetHardwareId(), jobWhat(j), jobState(j))
	if n := len(j.GetAttempts()); n > 0 && j.GetState() == machine.JobState_JOB_STATE_RUNNING {
		fmt.Fprintf(&b, " attempt %d", j.GetAttempts()[n-1].GetN())
	}
	switch {
	case j.GetMessage() != "":
		b.WriteString(": " + j.GetMessage())
	case j.GetAnswer() != "":
		b.WriteString(": " + j.GetAnswer())
	}
	return b.String()
}

func jobState(j *machine.Job) string { return strings.TrimPrefix(j.GetState().String(), "JOB_STATE_") }

// jobWhat names what a job does: "power on", "power status", "bootdev pxe
// (persistent, efi)", "netboot".
func jobWhat(j *machine.Job) string {
	var s string
	switch j.GetKind() {
	case machine.JobKind_JOB_KIND_POWER_STATUS:
		s = "power status"
	case machine.JobKind_JOB_KIND_POWER:
		s = "power " + j.GetAction()
	case machine.JobKind_JOB_KIND_BOOT_DEVICE:
		s = "bootdev " + j.GetAction()
	case machine.JobKind_JOB_KIND_NETBOOT:
		s = "netboot"
	default:
		s = strings.ToLower(strings.TrimPrefix(j.GetKind().String(), "JOB_KIND_"))
	}
	var opts []string
	if j.GetPersistent() {
		opts = append(opts, "persistent")
	}
	if j.GetEfi() {
		opts = append(opts, "efi")
	}
	if len(opts) > 0 {
		s += " (" + strings.Join(opts, ", ") + ")"
	}
	return s
}

func (a *app) machinePowerCmd() *cobra.Command {
	var f jobFollow
	cmd := &cobra.Command{
		Use:   "power on|off|cycle|reset|status ID",
		Short: "Switch a machine's power, or ask its state, through its BMC",
		Long: `Power switches the machine with hardware id ID on, off (hard, no OS shutdown),
cycles it (off, then on) or resets it (hard reset, power stays on); status asks
the BMC whether it is on or off.`,
		Example: `  herd machine power cycle 0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94
  herd machine power status 0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("want an action (on, off, cycle, reset or status) and a hardware id, got %d arguments", len(args))
			}
			if !powerActions[args[0]] {
				return usagef("power action %q: want on, off, cycle, reset or status", args[0])
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		return a.ask(ctx, f, func(c machine.MachineServiceClient) (*machine.Job, error) {
			return c.Power(ctx, &machine.PowerRequest{HardwareId: args[1], Action: args[0]})
		})
	})
	return cmd
}

var powerActions = map[string]bool{"on": true, "off": true, "cycle": true, "reset": true, "status": true}

func (a *app) machineBootdevCmd() *cobra.Command {
	var (
		f               jobFollow
		persistent, efi bool
	)
	cmd := &cobra.Command{
		Use:   "bootdev ID pxe|disk|bios",
		Short: "Set the device a machine boots from next, through its BMC",
		Long: `Bootdev sets the next boot device of the machine with hardware id ID: the
network (pxe), its disk, or the firmware's setup (bios). Only the next boot,
unless --persistent; a legacy BIOS boot, unless --efi.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("want a hardware id and a device (pxe, disk or bios), got %d arguments", len(args))
			}
			switch args[1] {
			case "pxe", "disk", "bios":
				return nil
			}
			return usagef("boot device %q: want pxe, disk or bios", args[1])
		},
	}
	cmd.Flags().BoolVar(&persistent, "persistent", false, "keep the device for every boot, not only the next")
	cmd.Flags().BoolVar(&efi, "efi", false, "boot in UEFI mode, not legacy BIOS")
	f.register(cmd)
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		return a.ask(ctx, f, func(c machine.MachineServiceClient) (*machine.Job, error) {
			return c.SetBootDevice(ctx, &machine.BootDeviceRequest{HardwareId: args[0], Device: args[1], Persistent: persistent, Efi: efi})
		})
	})
	return cmd
}

func (a *app) machineNetbootCmd() *cobra.Command {
	var (
		f   jobFollow
		efi bool
	)
	cmd := &cobra.Command{
		Use:   "netboot ID",
		Short: "Boot a machine from the network now: next boot pxe, then a power cycle (or on)",
		Long: `Netboot sets the next boot of the machine with hardware id ID to the network
and power cycles it (powers it on when it is off): the step that starts its
provisioning when a workflow waits for it.`,
		Args: idArg("hardware"),
	}
	cmd.Flags().BoolVar(&efi, "efi", false, "boot in UEFI mode, not legacy BIOS")
	f.register(cmd)
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		return a.ask(ctx, f, func(c machine.MachineServiceClient) (*machine.Job, error) {
			return c.Netboot(ctx, &machine.NetbootRequest{HardwareId: args[0], Efi: efi})
		})
	})
	return cmd
}

func (a *app) machineJobCmd() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "job JOB-ID",
		Short: "Show a BMC job: its state, attempts and the BMC's answer",
		Args:  idArg("job"),
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the job until it ends")
	cmd.Annotations = map[string]string{waitsForever: "true"}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.machineClient(ctx)
		if err != nil {
			return err
		}
		if watch {
			_, err := a.followJob(ctx, c, args[0])
			return err
		}
		j, err := c.GetJob(ctx, &machine.GetJobRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, j, false)
		}
		t := newTable(a.stdout, "FIELD", "VALUE")
		t.row("id", j.GetId())
		t.row("hardware", j.GetHardwareId())
		t.row("job", jobWhat(j))
		t.row("state", jobState(j))
		t.row("origin", j.GetOrigin())
		t.row("workflow", j.GetWorkflowId())
		t.row("created", when(j.GetCreatedAt()))
		t.row("updated", when(j.GetUpdatedAt()))
		t.row("deadline", when(j.GetDeadline()))
		t.row("answer", j.GetAnswer())
		t.row("message", j.GetMessage())
		for _, at := range j.GetAttempts() {
			line := when(at.GetStart())
			if at.GetEnd() != nil {
				line += " " + at.GetEnd().AsTime().Sub(at.GetStart().AsTime()).Round(time.Millisecond).String()
			}
			if at.GetError() != "" {
				line += " " + at.GetError()
			}
			t.row("attempt "+strconv.Itoa(int(at.GetN())), line)
		}
		return t.flush()
	})
	return cmd
}

func (a *app) machineJobsCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "jobs [ID]",
		Short: "List BMC jobs, newest first: of the machine with hardware id ID, or of all",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("want at most one hardware id, got %d arguments", len(args))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many jobs (1 to 1000)")
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		if limit < 1 || limit > 1000 {
			return usagef("--limit %d: want 1 to 1000", limit)
		}
		c, err := a.machineClient(ctx)
		if err != nil {
			return err
		}
		req := &machine.ListJobsRequest{Limit: int32(limit)}
		if len(args) == 1 {
			req.HardwareId = args[0]
		}
		list, err := c.ListJobs(ctx, req)
		if err != nil {
			return err
		}
		if a.set.json {
			for _, j := range list.GetJobs() {
				if err := writeProto(a.stdout, j, true); err != nil {
					return err
				}
			}
			return nil
		}
		t := newTable(a.stdout, "ID", "HARDWARE", "JOB", "STATE", "ATTEMPTS", "CREATED", "ANSWER OR REASON")
		for _, j := range list.GetJobs() {
			says := j.GetAnswer()
			if j.GetMessage() != "" {
				says = j.GetMessage()
			}
			t.row(j.GetId(), j.GetHardwareId(), jobWhat(j), jobState(j), strconv.Itoa(len(j.GetAttempts())), when(j.GetCreatedAt()), says)
		}
		return t.flush()
	})
	return cmd
}

// powerStates maps hardware ids to the power state herd-server last
// learned ("unknown" before the first check); nil from a server without
// BMC support (Tinkerbell's), so the table simply has no POWER column.
func (a *app) powerStates(ctx context.Context) (map[string]string, error) {
	c, err := a.machineClient(ctx)
	if err != nil {
		return nil, err
	}
	list, err := c.ListPower(ctx, &machine.ListPowerRequest{})
	if status.Code(err) == codes.Unimplemented {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range list.GetMachines() {
		s := p.GetState()
		if s == "" {
			s = "unknown"
		}
		out[p.GetHardwareId()] = s
	}
	return out, nil
}
