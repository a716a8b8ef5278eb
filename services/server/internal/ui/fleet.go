package ui

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// Row is one machine as the fleet page shows it.
type Row struct {
	ID       string       `json:"id"`
	Hostname string       `json:"hostname"`
	MACs     []string     `json:"macs"`
	IPs      []string     `json:"ips"`
	Netboot  string       `json:"netboot"` // on, off or mixed (over its interfaces)
	BMC      string       `json:"bmc,omitempty"`
	Workflow *RowWorkflow `json:"workflow"`
}

// RowWorkflow is a machine's current (or else last) workflow.
type RowWorkflow struct {
	ID    string `json:"id"`
	State string `json:"state"` // PENDING, RUNNING, FAILED, TIMEOUT, SUCCESS
	// Done of Total actions have succeeded; Total 0: not known yet.
	Done   int64  `json:"done"`
	Total  int64  `json:"total"`
	Action string `json:"action,omitempty"` // task/action last reported
}

// fleet is what one feed knows: hardware records, workflows and their
// contexts, indexed by the addresses (MAC, IP) that tie them together.
// Only the feed's goroutine touches it.
type fleet struct {
	hw        map[string]*hardware.Hardware
	wf        map[string]*followed
	hwByAddr  map[string]string          // address -> hardware id
	wfsByAddr map[string]map[string]bool // address -> workflow ids
	counts    map[countKey]int64
}

// countKey is what a rendered template's action count is taken to
// depend on: its template and its number of lines. Rendering puts values
// into lines; only a loop or a condition (or a value with line breaks)
// changes how many lines, and only those change how many actions. So a
// fleet of 10,000 workflows of one template parses a few documents, not
// 10,000 (half a millisecond each).
type countKey struct {
	template string
	lines    int
}

// maxCounts bounds the cache of counts; past it, it starts over.
const maxCounts = 4096

// actions counts w's actions, once per countKey.
func (f *fleet) actions(w *workflow.Workflow) int64 {
	k := countKey{w.GetTemplate(), strings.Count(w.GetData(), "\n")}
	if n, ok := f.counts[k]; ok {
		return n
	}
	if len(f.counts) >= maxCounts {
		f.counts = map[countKey]int64{}
	}
	n := countActions(w.GetData())
	f.counts[k] = n
	return n
}

type followed struct {
	wf    *workflow.Workflow
	ctx   *workflow.WorkflowContext
	addrs []string
	// actions counts the rendered template's actions: the total until
	// the context is known, and all a succeeded workflow needs.
	actions int64
}

// countActions counts the actions of a rendered template (0: unreadable).
func countActions(data string) int64 {
	var t struct {
		Tasks []struct {
			Actions []struct{} `yaml:"actions"`
		} `yaml:"tasks"`
	}
	if yaml.Unmarshal([]byte(data), &t) != nil {
		return 0
	}
	n := 0
	for _, task := range t.Tasks {
		n += len(task.Actions)
	}
	return int64(n)
}

// needsContext reports whether the fleet needs a workflow's context to
// show its progress: not for one that succeeded (every action done).
func needsContext(fw *followed) bool {
	return fw.ctx == nil && !(fw.wf.GetState() == workflow.State_STATE_SUCCESS && fw.actions > 0)
}

func newFleet() *fleet {
	return &fleet{hw: map[string]*hardware.Hardware{}, wf: map[string]*followed{},
		hwByAddr: map[string]string{}, wfsByAddr: map[string]map[string]bool{}, counts: map[countKey]int64{}}
}

// normAddr is the form addresses are matched in: a MAC lower-case with
// colons, an IP in netip's form, anything else as given, lower-case.
func normAddr(s string) string {
	s = strings.TrimSpace(s)
	if m, err := net.ParseMAC(s); err == nil {
		return m.String()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(s)
}

func hwAddrs(h *hardware.Hardware) []string {
	var out []string
	for _, i := range h.GetNetwork().GetInterfaces() {
		if m := i.GetDhcp().GetMac(); m != "" {
			out = append(out, normAddr(m))
		}
		if ip := i.GetDhcp().GetIp().GetAddress(); ip != "" {
			out = append(out, normAddr(ip))
		}
	}
	return out
}

// wfAddrs are the addresses a workflow's hardware map names (a map that
// is not JSON names none).
func wfAddrs(w *workflow.Workflow) []string {
	var m map[string]string
	if json.Unmarshal([]byte(w.GetHardware()), &m) != nil {
		return nil
	}
	var out []string
	for _, v := range m {
		out = append(out, normAddr(v))
	}
	return out
}

// setHardware records h; it returns the ids of the rows that changed.
func (f *fleet) setHardware(h *hardware.Hardware) []string {
	f.deleteHardware(h.GetId())
	f.hw[h.GetId()] = h
	for _, a := range hwAddrs(h) {
		f.hwByAddr[a] = h.GetId()
	}
	return []string{h.GetId()}
}

func (f *fleet) deleteHardware(id string) {
	if old, ok := f.hw[id]; ok {
		for _, a := range hwAddrs(old) {
			if f.hwByAddr[a] == id {
				delete(f.hwByAddr, a)
			}
		}
		delete(f.hw, id)
	}
}

// machinesOf are the hardware ids a workflow's addresses belong to.
func (f *fleet) machinesOf(addrs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range addrs {
		if id, ok := f.hwByAddr[a]; ok && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// setWorkflow records w (keeping a context already known) and returns
// the rows that changed.
func (f *fleet) setWorkflow(w *workflow.Workflow) []string {
	var c *workflow.WorkflowContext
	var actions int64
	if old, ok := f.wf[w.GetId()]; ok {
		c, actions = old.ctx, old.actions
	}
	if actions == 0 {
		actions = f.actions(w)
	}
	f.deleteWorkflow(w.GetId())
	fw := &followed{wf: w, ctx: c, addrs: wfAddrs(w), actions: actions}
	f.wf[w.GetId()] = fw
	for _, a := range fw.addrs {
		if f.wfsByAddr[a] == nil {
			f.wfsByAddr[a] = map[string]bool{}
		}
		f.wfsByAddr[a][w.GetId()] = true
	}
	return f.machinesOf(fw.addrs)
}

// setContext records where workflow id stands.
func (f *fleet) setContext(id string, c *workflow.WorkflowContext) []string {
	fw, ok := f.wf[id]
	if !ok {
		return nil
	}
	fw.ctx = c
	return f.machinesOf(fw.addrs)
}

// deleteWorkflow forgets workflow id and returns the rows that changed.
func (f *fleet) deleteWorkflow(id string) []string {
	fw, ok := f.wf[id]
	if !ok {
		return nil
	}
	for _, a := range fw.addrs {
		delete(f.wfsByAddr[a], id)
		if len(f.wfsByAddr[a]) == 0 {
			delete(f.wfsByAddr, a)
		}
	}
	delete(f.wf, id)
	return f.machinesOf(fw.addrs)
}

// final reports whether a workflow in state s has ended.
func final(s workflow.State) bool {
	return s == workflow.State_STATE_FAILED || s == workflow.State_STATE_TIMEOUT || s == workflow.State_STATE_SUCCESS
}

// newer decides which of two workflows of a machine the fleet shows: one
// still going before one that ended, then the later created, then the
// greater id (so the choice never flips between feeds).
func newer(a, b *workflow.Workflow) bool {
	if fa, fb := final(a.GetState()), final(b.GetState()); fa != fb {
		return !fa
	}
	ta, tb := a.GetCreatedAt().AsTime(), b.GetCreatedAt().AsTime()
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.GetId() > b.GetId()
}

// progress is how many of a workflow's actions have succeeded, of how
// many: the context names the last reported action (index from 0).
func progress(c *workflow.WorkflowContext) (done, total int64) {
	if c == nil {
		return 0, 0
	}
	total = c.GetTotalNumberOfActions()
	if c.GetCurrentAction() != "" {
		done = c.GetCurrentActionIndex()
		if c.GetCurrentActionState() == workflow.State_STATE_SUCCESS {
			done++
		}
	}
	return min(max(done, 0), total), total
}

// stateName is a workflow state without its STATE_ prefix.
func stateName(s workflow.State) string { return strings.TrimPrefix(s.String(), "STATE_") }

// row is machine id as the fleet shows it; false when there is no such
// machine.
func (f *fleet) row(id string) (Row, bool) {
	h, ok := f.hw[id]
	if !ok {
		return Row{}, false
	}
	r := Row{ID: id, MACs: []string{}, IPs: []string{}, BMC: h.GetBmc().GetAddress()}
	on, off := 0, 0
	var best *followed
	for _, i := range h.GetNetwork().GetInterfaces() {
		d := i.GetDhcp()
		if r.Hostname == "" {
			r.Hostname = d.GetHostname()
		}
		if d.GetMac() != "" {
			r.MACs = append(r.MACs, normAddr(d.GetMac()))
		}
		if ip := d.GetIp().GetAddress(); ip != "" {
			r.IPs = append(r.IPs, ip)
		}
		if i.GetNetboot().GetAllowPxe() {
			on++
		} else {
			off++
		}
	}
	switch {
	case on > 0 && off > 0:
		r.Netboot = "mixed"
	case on > 0:
		r.Netboot = "on"
	default:
		r.Netboot = "off"
	}
	for _, a := range hwAddrs(h) {
		for wid := range f.wfsByAddr[a] {
			if fw := f.wf[wid]; best == nil || newer(fw.wf, best.wf) {
				best = fw
			}
		}
	}
	if best != nil {
		done, total := progress(best.ctx)
		if best.ctx == nil {
			total = best.actions
			if best.wf.GetState() == workflow.State_STATE_SUCCESS {
				done = total
			}
		}
		r.Workflow = &RowWorkflow{ID: best.wf.GetId(), State: stateName(best.wf.GetState()), Done: done, Total: total}
		if c := best.ctx; c != nil && c.GetCurrentAction() != "" {
			r.Workflow.Action = c.GetCurrentTask() + "/" + c.GetCurrentAction()
		}
	}
	return r, true
}
