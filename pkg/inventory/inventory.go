// Package inventory is the in-memory copy of herd-server's hardware that
// boots and metadata answer from: filled by HardwareService.Watch at start,
// kept current by its changes, and still answering from the last known
// state while the server is away. No lookup makes a network call.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
)

// Machine is one hardware record as the inventory holds it.
type Machine struct {
	// Hardware is shared between lookups: read it, never change it.
	Hardware *hardware.Hardware
	// WorkerToken is the machine's worker credential (see pkg/workertoken).
	WorkerToken string
	// Derived is what the inventory's derive function made of the record.
	Derived any
	// gen is the inventory's derive generation Derived was computed in.
	gen uint64
}

// Inventory indexes machines by id, MAC and IP.
type Inventory struct {
	log    *slog.Logger
	derive func(*hardware.Hardware) any

	mu    sync.RWMutex
	gen   uint64 // bumped by Rederive, under mu
	byID  map[string]*Machine
	byMAC map[string]*Machine // key: the 6 (or more) address bytes
	byIP  map[netip.Addr]*Machine

	syncOnce sync.Once
	synced   chan struct{}

	// The watch's state for Health: since when no stream has been past
	// its snapshot (zero while one is) and why.
	linkMu   sync.Mutex
	downAt   time.Time
	downErr  error
	now      func() time.Time
	failures int // attempts since the last synced stream
}

// New returns an empty inventory. derive, if not nil, runs once per record
// version, so lookups can hand out precomputed answers, and again for the
// records Rederive names (when what derive reads besides the record, such
// as boots' resolved time-server names, changed).
func New(log *slog.Logger, derive func(*hardware.Hardware) any) *Inventory {
	return &Inventory{log: log, derive: derive, synced: make(chan struct{}), byID: map[string]*Machine{},
		byMAC: map[string]*Machine{}, byIP: map[netip.Addr]*Machine{}, now: time.Now}
}

// ErrNotSynced is Health's answer before the first snapshot arrived: the
// service has nothing to answer from yet.
var ErrNotSynced = errors.New("hardware inventory not synced with herd-server yet")

// Health is the inventory's part of a service's /healthz (observe.Mount):
// ErrNotSynced before the first snapshot (nothing to answer from: 503);
// once the service has one but the watch is down, an observe.Degraded
// error naming since when herd-server has been unreachable and why (the
// service still answers from memory: 200 "degraded"); nil while the watch
// is current.
func (i *Inventory) Health(context.Context) error {
	select {
	case <-i.synced:
	default:
		return ErrNotSynced
	}
	i.linkMu.Lock()
	downAt, downErr := i.downAt, i.downErr
	i.linkMu.Unlock()
	if downAt.IsZero() {
		return nil
	}
	return observe.Degraded(fmt.Errorf("herd-server unreachable since %s (%s ago), serving the last known inventory of %d machines: %w",
		downAt.UTC().Format(time.RFC3339), i.now().Sub(downAt).Round(time.Second), i.Len(), downErr))
}

// linkUp records a stream past its snapshot; it returns how long the
// watch was down (0 for the first sync, even after failed attempts).
func (i *Inventory) linkUp() time.Duration {
	i.linkMu.Lock()
	defer i.linkMu.Unlock()
	var down time.Duration
	select {
	case <-i.synced: // synced before: this is a reconnection
		if !i.downAt.IsZero() {
			down = i.now().Sub(i.downAt)
		}
	default:
	}
	i.downAt, i.failures = time.Time{}, 0
	return down
}

// linkDown records a failed stream; first reports whether it is the
// first failure since the watch was last current.
func (i *Inventory) linkDown(err error) (first bool, failures int) {
	i.linkMu.Lock()
	defer i.linkMu.Unlock()
	if i.downAt.IsZero() {
		i.downAt = i.now()
		first = true
	}
	i.downErr = err
	i.failures++
	return first, i.failures
}

// ByMAC finds the machine with an interface of that MAC.
func (i *Inventory) ByMAC(mac net.HardwareAddr) (Machine, bool) {
	i.mu.RLock()
	m, ok := i.byMAC[string(mac)]
	i.mu.RUnlock()
	if !ok {
		return Machine{}, false
	}
	return *m, true
}

// ByIP finds the machine with an interface of that IP.
func (i *Inventory) ByIP(ip netip.Addr) (Machine, bool) {
	i.mu.RLock()
	m, ok := i.byIP[ip.Unmap()]
	i.mu.RUnlock()
	if !ok {
		return Machine{}, false
	}
	return *m, true
}

// ByID finds the machine with that hardware id.
func (i *Inventory) ByID(id string) (Machine, bool) {
	i.mu.RLock()
	m, ok := i.byID[id]
	i.mu.RUnlock()
	if !ok {
		return Machine{}, false
	}
	return *m, true
}

// Each calls f with every machine (in no order) until f returns false. f
// runs under the inventory's read lock: it must not call the inventory.
func (i *Inventory) Each(f func(Machine) bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	for _, m := range i.byID {
		if !f(*m) {
			return
		}
	}
}

// Rederive runs the derive function again for every machine whose record
// match reports true, replacing its Derived, and returns how many it
// re-derived. Call it after something derive reads besides the record
// changed. A record arriving meanwhile, derived before the change, is
// derived again as it goes in, so no answer computed before the call
// survives it for a matching record.
func (i *Inventory) Rederive(match func(*hardware.Hardware) bool) int {
	if i.derive == nil {
		return 0
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.gen++
	var again []*Machine
	for _, m := range i.byID {
		if match(m.Hardware) {
			again = append(again, m)
		}
	}
	for _, m := range again {
		// Lookups copy a *Machine after unlocking: replace it, never
		// write into one.
		nm := &Machine{Hardware: m.Hardware, WorkerToken: m.WorkerToken, Derived: i.derive(m.Hardware), gen: i.gen}
		i.removeLocked(m.Hardware.GetId())
		i.addLocked(nm)
	}
	return len(again)
}

// Len is the number of machines.
func (i *Inventory) Len() int {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return len(i.byID)
}

// WaitSynced returns once the first complete snapshot arrived.
func (i *Inventory) WaitSynced(ctx context.Context) error {
	select {
	case <-i.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Watcher is the one call the inventory makes.
type Watcher interface {
	Watch(ctx context.Context, in *hardware.WatchRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[hardware.WatchEvent], error)
}

// Backoff bounds the pause between reconnections. The cap is short so that
// a server coming back is seen within a second (a failed attempt while the
// gRPC channel is down costs nothing on the network; the channel's own
// reconnection pace is connect.QuickReconnect's).
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 250 * time.Millisecond
	// warnEvery spaces the warnings of one outage (the first is at once).
	warnEvery = 600 // attempts, about every 2.5 minutes at maxBackoff
)

// Run keeps the inventory current until ctx ends (then it returns nil).
// When the stream breaks it keeps what it has and reconnects with growing
// pauses; each new stream's snapshot replaces the whole index at once, so
// records deleted meanwhile disappear too.
func (i *Inventory) Run(ctx context.Context, w Watcher) error {
	backoff := minBackoff
	for {
		synced, err := i.watch(ctx, w)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			backoff = minBackoff
		}
		first, n := i.linkDown(err)
		if first || n%warnEvery == 0 {
			i.log.Warn("hardware watch interrupted; serving the last known inventory", "err", err, "attempts", n, "retry_in", backoff, "machines", i.Len())
		} else {
			i.log.Debug("hardware watch still down", "err", err, "attempts", n, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// watch runs one stream; synced reports whether it got past the snapshot.
func (i *Inventory) watch(ctx context.Context, w Watcher) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.Watch(ctx, &hardware.WatchRequest{})
	if err != nil {
		return false, err
	}
	snapshot := map[string]*Machine{}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return synced, errors.New("server ended the stream")
		}
		if err != nil {
			return synced, err
		}
		switch ev.GetType() {
		case hardware.WatchEvent_TYPE_SYNCED:
			if synced {
				return true, errors.New("second SYNCED on one stream")
			}
			i.replace(snapshot)
			snapshot, synced = nil, true
			// linkUp first: Health must not see synced but still down.
			down := i.linkUp()
			i.syncOnce.Do(func() { close(i.synced) })
			if down > 0 {
				i.log.Info("inventory synced again", "machines", i.Len(), "down_seconds", down.Seconds())
			} else {
				i.log.Info("inventory synced", "machines", i.Len())
			}
		case hardware.WatchEvent_TYPE_ADDED, hardware.WatchEvent_TYPE_UPDATED:
			m := i.machine(ev)
			if !synced {
				snapshot[m.Hardware.GetId()] = m
			} else {
				i.put(m)
			}
		case hardware.WatchEvent_TYPE_DELETED:
			if !synced {
				delete(snapshot, ev.GetHardware().GetId())
			} else {
				i.remove(ev.GetHardware().GetId())
			}
		default:
			return synced, fmt.Errorf("unknown watch event type %v", ev.GetType())
		}
	}
}

func (i *Inventory) machine(ev *hardware.WatchEvent) *Machine {
	m := &Machine{Hardware: ev.GetHardware(), WorkerToken: ev.GetWorkerToken()}
	if i.derive != nil {
		i.mu.RLock()
		m.gen = i.gen
		i.mu.RUnlock()
		m.Derived = i.derive(m.Hardware)
	}
	return m
}

// freshLocked derives m again, under mu, when a Rederive ran since it was
// derived: what derive read may have changed meanwhile.
func (i *Inventory) freshLocked(m *Machine) {
	if i.derive != nil && m.gen != i.gen {
		m.Derived = i.derive(m.Hardware)
		m.gen = i.gen
	}
}

// keys are a machine's index keys.
func keys(hw *hardware.Hardware) (macs []string, ips []netip.Addr) {
	ms, is := spec.HardwareAddresses(hw)
	for _, s := range ms {
		if mac, err := net.ParseMAC(s); err == nil {
			macs = append(macs, string(mac))
		}
	}
	for _, s := range is {
		if ip, err := netip.ParseAddr(s); err == nil {
			ips = append(ips, ip.Unmap())
		}
	}
	return macs, ips
}

func (i *Inventory) put(m *Machine) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.freshLocked(m)
	i.removeLocked(m.Hardware.GetId())
	i.addLocked(m)
}

func (i *Inventory) remove(id string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.removeLocked(id)
}

func (i *Inventory) replace(all map[string]*Machine) {
	byID, byMAC, byIP := make(map[string]*Machine, len(all)), make(map[string]*Machine, len(all)), make(map[netip.Addr]*Machine, len(all))
	i.mu.Lock()
	defer i.mu.Unlock()
	i.byID, i.byMAC, i.byIP = byID, byMAC, byIP
	for _, m := range all {
		i.freshLocked(m)
		i.addLocked(m)
	}
}

func (i *Inventory) addLocked(m *Machine) {
	i.byID[m.Hardware.GetId()] = m
	macs, ips := keys(m.Hardware)
	for _, k := range macs {
		i.byMAC[k] = m
	}
	for _, ip := range ips {
		i.byIP[ip] = m
	}
}

func (i *Inventory) removeLocked(id string) {
	old, ok := i.byID[id]
	if !ok {
		return
	}
	delete(i.byID, id)
	macs, ips := keys(old.Hardware)
	for _, k := range macs {
		if i.byMAC[k] == old {
			delete(i.byMAC, k)
		}
	}
	for _, ip := range ips {
		if i.byIP[ip] == old {
			delete(i.byIP, ip)
		}
	}
}
