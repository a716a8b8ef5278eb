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
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
)

// Machine is one hardware record as the inventory holds it. The record
// itself is kept in its wire form, a fraction of the decoded proto's
// memory (100,000 records and more): Hardware decodes it, so paths that
// run per packet or per request read ID and Derived instead.
type Machine struct {
	// ID is the record's hardware id.
	ID string
	// WorkerToken is the machine's worker credential (see pkg/workertoken).
	WorkerToken string
	// Derived is what the inventory's derive function made of the record.
	Derived any
	// record is the record's wire form; nil when Derived is RecordFree.
	record []byte
	// keys are the record's index keys, packed (see packKeys).
	keys string
	// gen is the inventory's derive generation Derived was computed in.
	gen uint64
}

// RecordFree is implemented by a derived value that holds everything its
// service reads of a watch event: the inventory then keeps no copy of the
// record, only its id and index keys (Machine.Hardware returns nil, and
// WorkerToken is empty), and Rederive passes the machine by (it has no
// record to derive from again).
type RecordFree interface{ RecordFree() }

// NewMachine is a Machine holding hw, as the inventory makes them (for
// tests' own lookups).
func NewMachine(hw *hardware.Hardware, workerToken string, derived any) Machine {
	return *newMachine(hw, workerToken, derived, 0)
}

func newMachine(hw *hardware.Hardware, workerToken string, derived any, gen uint64) *Machine {
	m := &Machine{ID: hw.GetId(), WorkerToken: workerToken, Derived: derived, keys: packKeys(hw), gen: gen}
	if _, free := derived.(RecordFree); free {
		m.WorkerToken = ""
	} else {
		// Marshal cannot fail on a message that came off the wire or
		// was built in Go; an empty record is the safe fallback.
		m.record, _ = proto.Marshal(hw)
	}
	return m
}

// Hardware decodes the record: a new copy on each call, which the caller
// may keep or change. It is nil when the derived value is RecordFree.
func (m Machine) Hardware() *hardware.Hardware {
	if _, free := m.Derived.(RecordFree); free {
		return nil
	}
	hw := &hardware.Hardware{}
	if err := proto.Unmarshal(m.record, hw); err != nil {
		// Not possible for bytes proto.Marshal wrote; keep the id.
		return &hardware.Hardware{Id: m.ID}
	}
	return hw
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

// Each calls f with every machine (in no order) until f returns false. It
// calls f outside the inventory's lock (f may decode every record, which
// must not hold up lookups), with the machines as they were when Each
// began.
func (i *Inventory) Each(f func(Machine) bool) {
	for _, m := range i.all() {
		if !f(*m) {
			return
		}
	}
}

// all lists the machines.
func (i *Inventory) all() []*Machine {
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make([]*Machine, 0, len(i.byID))
	for _, m := range i.byID {
		out = append(out, m)
	}
	return out
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
	i.gen++
	gen := i.gen
	i.mu.Unlock()
	// Records are decoded, matched and derived outside the lock, so
	// lookups go on meanwhile.
	n := 0
	for _, m := range i.all() {
		if m.record == nil {
			continue // RecordFree: nothing to derive from
		}
		hw := m.Hardware()
		if !match(hw) {
			continue
		}
		n++
		// Lookups copy a *Machine after unlocking: replace it, never
		// write into one.
		nm := *m
		nm.Derived, nm.gen = i.derive(hw), gen
		i.mu.Lock()
		// A version put meanwhile was derived after the gen bump, or
		// again as it went in (freshLocked): it stays.
		if i.byID[m.ID] == m {
			i.removeLocked(m.ID)
			i.addLocked(&nm)
		}
		i.mu.Unlock()
	}
	return n
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
			// Decoding the snapshot left garbage the size of the fleet's
			// records: hand it back to the OS once, rather than keep
			// the peak. After linkUp: the index is already served.
			debug.FreeOSMemory()
		case hardware.WatchEvent_TYPE_ADDED, hardware.WatchEvent_TYPE_UPDATED:
			m := i.machine(ev)
			if !synced {
				snapshot[m.ID] = m
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
	hw := ev.GetHardware()
	var derived any
	var gen uint64
	if i.derive != nil {
		i.mu.RLock()
		gen = i.gen
		i.mu.RUnlock()
		derived = i.derive(hw)
	}
	return newMachine(hw, ev.GetWorkerToken(), derived, gen)
}

// freshLocked derives m again, under mu, when a Rederive ran since it was
// derived: what derive read may have changed meanwhile.
func (i *Inventory) freshLocked(m *Machine) {
	if i.derive != nil && m.gen != i.gen && m.record != nil {
		m.Derived = i.derive(m.Hardware())
		m.gen = i.gen
	}
}

// Kinds of packed index keys.
const (
	keyMAC byte = 'm'
	keyIP  byte = 'i'
)

// packKeys packs a record's index keys in one string: each is a kind
// byte, a length byte and the key's bytes (a MAC's address bytes, an IP's
// binary form, zone included). The MAC keys of the byMAC index are
// substrings of it, so they take no memory of their own.
func packKeys(hw *hardware.Hardware) string {
	ms, is := spec.HardwareAddresses(hw)
	var b []byte
	for _, s := range ms {
		if mac, err := net.ParseMAC(s); err == nil && len(mac) <= 255 {
			b = append(append(b, keyMAC, byte(len(mac))), mac...)
		}
	}
	for _, s := range is {
		if ip, err := netip.ParseAddr(s); err == nil {
			if bin, err := ip.Unmap().MarshalBinary(); err == nil && len(bin) <= 255 {
				b = append(append(b, keyIP, byte(len(bin))), bin...)
			}
		}
	}
	return string(b)
}

// eachKey calls mac or ip with every key packKeys packed.
func eachKey(keys string, mac func(string), ip func(netip.Addr)) {
	for len(keys) >= 2 {
		kind, n := keys[0], int(keys[1])
		if len(keys) < 2+n {
			return // not written by packKeys
		}
		k := keys[2 : 2+n]
		keys = keys[2+n:]
		switch kind {
		case keyMAC:
			mac(k)
		case keyIP:
			var a netip.Addr
			if a.UnmarshalBinary([]byte(k)) == nil {
				ip(a)
			}
		}
	}
}

func (i *Inventory) put(m *Machine) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.freshLocked(m)
	i.removeLocked(m.ID)
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
	i.byID, i.byMAC, i.byIP = byID, byMAC, byIP
	for _, m := range all {
		i.freshLocked(m)
		i.addLocked(m)
	}
	i.mu.Unlock()
}

func (i *Inventory) addLocked(m *Machine) {
	i.byID[m.ID] = m
	eachKey(m.keys, func(mac string) { i.byMAC[mac] = m }, func(ip netip.Addr) { i.byIP[ip] = m })
}

func (i *Inventory) removeLocked(id string) {
	old, ok := i.byID[id]
	if !ok {
		return
	}
	delete(i.byID, id)
	eachKey(old.keys, func(mac string) {
		if i.byMAC[mac] == old {
			delete(i.byMAC, mac)
		}
	}, func(ip netip.Addr) {
		if i.byIP[ip] == old {
			delete(i.byIP, ip)
		}
	})
}
