package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// writeJSON re-formats the JSON document b onto w: indented when alone,
// on one line when it is one of a list. Re-formatting also makes
// protojson's deliberately unstable spacing stable.
func writeJSON(w io.Writer, b []byte, line bool) error {
	var buf bytes.Buffer
	var err error
	if line {
		err = json.Compact(&buf, b)
	} else {
		err = json.Indent(&buf, b, "", "  ")
	}
	if err != nil {
		return fmt.Errorf("format JSON output: %w", err)
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

// writeProto prints m as JSON: snake_case field names as in Tinkerbell's
// files, and every field present (a PENDING state is 0 and would otherwise
// vanish).
func writeProto(w io.Writer, m proto.Message, line bool) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("format JSON output: %w", err)
	}
	return writeJSON(w, b, line)
}

// writeHardware prints a hardware record as Tinkerbell hardware JSON, the
// format `hardware push` reads.
func writeHardware(w io.Writer, hw *hardware.Hardware, line bool) error {
	b, err := spec.MarshalHardware(hw)
	if err != nil {
		return fmt.Errorf("format hardware %s: %w", hw.GetId(), err)
	}
	return writeJSON(w, b, line)
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

// row adds one line; tabs and newlines inside a cell would break the
// columns, so they become spaces. Empty cells at the end are dropped so
// lines carry no trailing padding.
func (t *table) row(cells ...string) {
	for len(cells) > 0 && cells[len(cells)-1] == "" {
		cells = cells[:len(cells)-1]
	}
	clean := make([]string, len(cells))
	for i, c := range cells {
		clean[i] = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
	}
	fmt.Fprintln(t.tw, strings.Join(clean, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// when formats a timestamp for tables: RFC 3339 in UTC, empty when unset.
func when(ts *timestamppb.Timestamp) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// hardwareTable and hardwareRows are the table of hardware records: one
// row per interface, as tink's `hardware list` prints.
// hardwareTable starts a hardware table; with power (not nil) it has a
// POWER column: the state herd-server last learned from each machine's
// BMC ("-": no BMC, "unknown": not learned yet).
func hardwareTable(w io.Writer, power map[string]string) *table {
	if power != nil {
		return newTable(w, "ID", "MAC ADDRESS", "IP ADDRESS", "HOSTNAME", "POWER")
	}
	return newTable(w, "ID", "MAC ADDRESS", "IP ADDRESS", "HOSTNAME")
}

func hardwareRows(t *table, hw *hardware.Hardware, power map[string]string) {
	pw := ""
	if power != nil {
		var ok bool
		if pw, ok = power[hw.GetId()]; !ok {
			pw = "-"
		}
	}
	ifaces := hw.GetNetwork().GetInterfaces()
	if len(ifaces) == 0 {
		t.row(hw.GetId(), "", "", "", pw)
		return
	}
	for _, iface := range ifaces {
		d := iface.GetDhcp()
		t.row(hw.GetId(), d.GetMac(), d.GetIp().GetAddress(), d.GetHostname(), pw)
	}
}

// progress is how far a workflow is, in percent of its actions finished,
// from its context: actions before the current one are done, and the
// current one too once it succeeded.
func progress(c *workflow.WorkflowContext) int {
	total := c.GetTotalNumberOfActions()
	if total <= 0 {
		return 0
	}
	done := c.GetCurrentActionIndex()
	if c.GetCurrentActionState() == workflow.State_STATE_SUCCESS {
		done++
	}
	done = min(max(done, 0), total)
	return int(done * 100 / total)
}

// stateName is a state without its STATE_ prefix, for watch lines.
func stateName(s workflow.State) string {
	return strings.TrimPrefix(s.String(), "STATE_")
}

// final reports whether s ends a workflow.
func final(s workflow.State) bool {
	return s == workflow.State_STATE_SUCCESS || s == workflow.State_STATE_FAILED || s == workflow.State_STATE_TIMEOUT
}

// seconds formats an action's run time.
func seconds(s int64) string {
	return (time.Duration(s) * time.Second).String()
}
