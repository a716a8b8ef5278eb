package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// How a feed paces itself.
const (
	// heartbeat keeps proxies and the write deadline from ending a quiet
	// stream.
	heartbeat = 15 * time.Second
	// relistEvery is how the feed learns of new workflows: the API has no
	// stream of workflows created, so the feed lists them again on each
	// hardware change (creating a workflow switches its machines' netboot,
	// when it was off) and at least this often. One call for the whole
	// fleet, never one per machine; a Watch of workflows in the API would
	// replace it.
	relistEvery = 3 * time.Second
	// fetchers bound the calls a feed has in flight for workflow details.
	fetchers = 8
	// rowsPerEvent bounds the rows one event carries.
	rowsPerEvent = 500
	// retryMillis is how soon the browser reconnects a broken stream.
	retryMillis = 2000
)

// change is one thing a feed's sources learned.
type change struct {
	hw       *hardware.Hardware // added or updated
	hwGone   string
	hwSynced bool
	listed   []*workflow.Workflow // every live workflow
	isList   bool
	wf       *workflow.Workflow // a followed workflow, as it stands now
	ctx      *workflow.WorkflowContext
	wfGone   string
	err      error
}

// feed turns the API's streams into one browser's stream of fleet rows.
type feed struct {
	hw      hardware.HardwareServiceClient
	wf      workflow.WorkflowServiceClient
	changes chan change
	relist  chan struct{}
	fetch   chan struct{} // semaphore
	wg      sync.WaitGroup

	fleet     *fleet
	following map[string]bool
}

func newFeed(a apiClients) *feed {
	return &feed{hw: a.hw, wf: a.wf, changes: make(chan change, 256), relist: make(chan struct{}, 1),
		fetch: make(chan struct{}, fetchers), fleet: newFleet(), following: map[string]bool{}}
}

// push hands c to the feed's loop; false once ctx has ended.
func (f *feed) push(ctx context.Context, c change) bool {
	select {
	case f.changes <- c:
		return true
	case <-ctx.Done():
		return false
	}
}

func (f *feed) watchHardware(ctx context.Context) {
	stream, err := f.hw.Watch(ctx, &hardware.WatchRequest{})
	if err != nil {
		f.push(ctx, change{err: fmt.Errorf("hardware watch: %w", err)})
		return
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			f.push(ctx, change{err: fmt.Errorf("hardware watch: %w", err)})
			return
		}
		var c change
		switch ev.GetType() {
		case hardware.WatchEvent_TYPE_ADDED, hardware.WatchEvent_TYPE_UPDATED:
			c.hw = ev.GetHardware()
		case hardware.WatchEvent_TYPE_DELETED:
			c.hwGone = ev.GetHardware().GetId()
		case hardware.WatchEvent_TYPE_SYNCED:
			c.hwSynced = true
		default:
			continue
		}
		if !f.push(ctx, c) {
			return
		}
	}
}

func (f *feed) listWorkflows(ctx context.Context) {
	tick := time.NewTicker(relistEvery)
	defer tick.Stop()
	for {
		stream, err := f.wf.ListWorkflows(ctx, &workflow.Empty{})
		var all []*workflow.Workflow
		for err == nil {
			var w *workflow.Workflow
			if w, err = stream.Recv(); err == nil {
				all = append(all, w)
			}
		}
		if !errors.Is(err, io.EOF) {
			f.push(ctx, change{err: fmt.Errorf("list workflows: %w", err)})
			return
		}
		if !f.push(ctx, change{listed: all, isList: true}) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-f.relist:
		}
	}
}

// details reads where workflow id stands: the workflow and its context.
func (f *feed) details(ctx context.Context, id string) change {
	select {
	case f.fetch <- struct{}{}:
		defer func() { <-f.fetch }()
	case <-ctx.Done():
		return change{err: ctx.Err()}
	}
	w, err := f.wf.GetWorkflow(ctx, &workflow.GetRequest{Id: id})
	if status.Code(err) == codes.NotFound {
		return change{wfGone: id}
	}
	if err != nil {
		return change{err: fmt.Errorf("workflow %s: %w", id, err)}
	}
	c, err := f.wf.GetWorkflowContext(ctx, &workflow.GetRequest{Id: id})
	if status.Code(err) == codes.NotFound {
		return change{wfGone: id}
	}
	if err != nil {
		return change{err: fmt.Errorf("workflow %s context: %w", id, err)}
	}
	return change{wf: w, ctx: c}
}

// follow reads workflow id now and, until it ends, again after its
// events (WatchWorkflowEvents); events that come while a read is under
// way cost one more read, not one each.
func (f *feed) follow(ctx context.Context, id string) {
	c := f.details(ctx, id)
	if !f.push(ctx, c) || c.err != nil || c.wf == nil || final(c.wf.GetState()) {
		return
	}
	stream, err := f.wf.WatchWorkflowEvents(ctx, &workflow.GetRequest{Id: id})
	if err != nil {
		f.push(ctx, change{err: fmt.Errorf("watch workflow %s: %w", id, err)})
		return
	}
	dirty := make(chan struct{}, 1)
	ended := make(chan error, 1)
	f.wg.Go(func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
			select {
			case dirty <- struct{}{}:
			default:
			}
		}
	})
	for {
		select {
		case <-ctx.Done():
			return
		case <-dirty:
			if c := f.details(ctx, id); !f.push(ctx, c) || c.err != nil || c.wfGone != "" {
				return
			}
		case err := <-ended:
			if !errors.Is(err, io.EOF) && status.Code(err) != codes.NotFound {
				f.push(ctx, change{err: fmt.Errorf("watch workflow %s: %w", id, err)})
				return
			}
			f.push(ctx, f.details(ctx, id))
			return
		}
	}
}

// apply records c and returns the rows it changed.
func (f *feed) apply(ctx context.Context, c change, synced bool) []string {
	switch {
	case c.hw != nil:
		if synced {
			// A new workflow switches its machines' netboot: look for it.
			select {
			case f.relist <- struct{}{}:
			default:
			}
		}
		return f.fleet.setHardware(c.hw)
	case c.hwGone != "":
		f.fleet.deleteHardware(c.hwGone)
		return []string{c.hwGone}
	case c.isList:
		var changed []string
		live := map[string]bool{}
		for _, w := range c.listed {
			live[w.GetId()] = true
			old, known := f.fleet.wf[w.GetId()]
			if f.following[w.GetId()] || known && sameWorkflow(old.wf, w) {
				continue // its follower keeps it current, or nothing changed
			}
			changed = append(changed, f.fleet.setWorkflow(w)...)
		}
		for id := range f.fleet.wf {
			if !live[id] {
				delete(f.following, id)
				changed = append(changed, f.fleet.deleteWorkflow(id)...)
			}
		}
		return changed
	case c.wf != nil:
		if _, known := f.fleet.wf[c.wf.GetId()]; !known {
			return nil // deleted since
		}
		return append(f.fleet.setWorkflow(c.wf), f.fleet.setContext(c.wf.GetId(), c.ctx)...)
	case c.wfGone != "":
		delete(f.following, c.wfGone)
		return f.fleet.deleteWorkflow(c.wfGone)
	}
	return nil
}

// followShown follows the workflow row r shows, once, unless it has
// succeeded: only workflows a row shows cost calls (their context, their
// events), not every old one, nor one whose list entry says all.
func (f *feed) followShown(ctx context.Context, r Row) {
	if r.Workflow == nil || f.following[r.Workflow.ID] {
		return
	}
	if fw := f.fleet.wf[r.Workflow.ID]; fw == nil || final(fw.wf.GetState()) && !needsContext(fw) {
		return // a success: its list entry says all
	}
	id := r.Workflow.ID
	f.following[id] = true
	f.wg.Go(func() { f.follow(ctx, id) })
}

// sameWorkflow reports whether a listed workflow is the one already known
// (same state, not updated since).
func sameWorkflow(a, b *workflow.Workflow) bool {
	return a.GetState() == b.GetState() && a.GetUpdatedAt().AsTime().Equal(b.GetUpdatedAt().AsTime())
}

// sse writes server-sent events.
type sse struct {
	w  io.Writer
	rc *http.ResponseController
}

func (s sse) event(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	// JSON holds no raw newline, so one data line carries it.
	_, err = fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", name, b)
	return err
}

func (s sse) flush() error { return s.rc.Flush() }

// run streams the fleet to out until ctx ends, the client goes away or
// an API call fails: first every machine's row and "machines", then the
// rows the workflows change and "synced", then each row that changes
// ("rows", a JSON array) or goes ("gone").
func (f *feed) run(ctx context.Context, out sse) error {
	ctx, cancel := context.WithCancel(ctx)
	defer f.wg.Wait()
	defer cancel()
	f.wg.Go(func() { f.watchHardware(ctx) })
	f.wg.Go(func() { f.listWorkflows(ctx) })
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	hwSynced, listed, machinesSent, synced := false, false, false, false
	pending := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			if _, err := io.WriteString(out.w, ": ping\n\n"); err != nil {
				return err
			}
			if err := out.flush(); err != nil {
				return err
			}
			continue
		case c := <-f.changes:
			// Take what else is waiting, so a burst is one write.
			for more := true; more; {
				if c.err != nil {
					return c.err
				}
				hwSynced = hwSynced || c.hwSynced
				listed = listed || c.isList
				for _, id := range f.apply(ctx, c, synced) {
					pending[id] = true
				}
				select {
				case c = <-f.changes:
				default:
					more = false
				}
			}
		}
		// The machines go out as soon as the hardware snapshot is in
		// ("machines"), their workflows when the list is ("synced"): a
		// large fleet's list takes seconds longer.
		if !hwSynced {
			continue
		}
		first := !machinesSent
		if first {
			for id := range f.fleet.hw {
				pending[id] = true
			}
			machinesSent = true
		}
		// Rows go in batches: one event per rowsPerEvent, not one per row,
		// so a browser parses a large fleet in a few hundred messages.
		var batch []Row
		for id := range pending {
			var err error
			if r, ok := f.fleet.row(id); ok {
				f.followShown(ctx, r)
				if batch = append(batch, r); len(batch) == rowsPerEvent {
					err, batch = out.event("rows", batch), nil
				}
			} else if !first {
				err = out.event("gone", map[string]string{"id": id})
			}
			if err != nil {
				return err
			}
			delete(pending, id)
		}
		if len(batch) > 0 {
			if err := out.event("rows", batch); err != nil {
				return err
			}
		}
		if first {
			if err := out.event("machines", struct{}{}); err != nil {
				return err
			}
		}
		if !synced && listed {
			synced = true
			if err := out.event("synced", struct{}{}); err != nil {
				return err
			}
		}
		if err := out.flush(); err != nil {
			return err
		}
	}
}
