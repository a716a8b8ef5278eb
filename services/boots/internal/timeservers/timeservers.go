// Package timeservers resolves the host names hardware records give as
// time servers (dhcp.time_servers: ["0.pool.ntp.org"], as Tinkerbell v0.6
// stored them) into the IPv4 addresses herd-boots puts in DHCP option 42.
//
// Resolution happens off the packet path. The Cache holds each name's
// addresses in memory; herd-boots' derive function (dhcp.Preparer) reads
// them when it precomputes a machine's answers, and a name it does not know
// yet is noted and resolved in the background at once. Every Refresh all
// names in use are resolved again. When a name's addresses change, the
// records naming it are derived again (inventory.Rederive), so the next
// reply carries them, and no packet ever waits for a lookup.
package timeservers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
)

// Resolver looks names up; *net.Resolver (net.DefaultResolver: the
// system's /etc/hosts and DNS) is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Inventory is what the cache needs of boots' inventory: the records, to
// learn which names are in use and by whom, and deriving again those that
// name a changed name.
type Inventory interface {
	Each(f func(inventory.Machine) bool)
	Rederive(match func(*hardware.Hardware) bool) int
}

// Config bounds the cache; zero values take the defaults.
type Config struct {
	// Refresh is how often every name in use is resolved again (5m).
	Refresh time.Duration
	// Timeout bounds one lookup (5s).
	Timeout time.Duration
	// MaxNames bounds the names held (1024); names beyond it are not
	// resolved, and said so at each refresh.
	MaxNames int
	// MaxAddrs bounds the addresses kept per name (8).
	MaxAddrs int
	// Parallel is how many lookups run at once (8).
	Parallel int
}

// Defaults of Config.
const (
	DefaultRefresh  = 5 * time.Minute
	DefaultTimeout  = 5 * time.Second
	DefaultMaxNames = 1024
	DefaultMaxAddrs = 8
	DefaultParallel = 8
)

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Refresh <= 0 {
		c.Refresh = DefaultRefresh
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	def(&c.MaxNames, DefaultMaxNames)
	def(&c.MaxAddrs, DefaultMaxAddrs)
	def(&c.Parallel, DefaultParallel)
	return c
}

// Cache is herd-boots' resolver cache of time-server names.
type Cache struct {
	cfg Config
	res Resolver
	log *slog.Logger

	mu      sync.RWMutex
	entries map[string][]netip.Addr // key: the name in lower case; nil: none usable (yet)
	pending map[string]bool         // noted by Addrs, not resolved yet
	over    map[string]bool         // asked for beyond MaxNames since the last round
	kick    chan struct{}
}

// New returns an empty cache; run it with Run.
func New(res Resolver, log *slog.Logger, cfg Config) *Cache {
	return &Cache{cfg: cfg.withDefaults(), res: res, log: log, entries: map[string][]netip.Addr{},
		pending: map[string]bool{}, over: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// key is the cache's spelling of a name: DNS names are case-insensitive
// (the record keeps the operator's spelling).
func key(name string) string { return strings.ToLower(name) }

// Addrs returns the usable IPv4 addresses known for name, from memory (it
// is dhcp.TimeServerNames). A name it does not hold yet answers nil and is
// resolved in the background; the records naming it are derived again
// once it resolves.
func (c *Cache) Addrs(name string) []netip.Addr {
	k := key(name)
	c.mu.RLock()
	a, ok := c.entries[k]
	c.mu.RUnlock()
	if ok {
		return a
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.entries[k]; ok {
		return a
	}
	if len(c.entries) >= c.cfg.MaxNames {
		c.over[k] = true
		return nil
	}
	c.entries[k] = nil
	c.pending[k] = true
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return nil
}

// Run resolves noted names as they come and every name in use each
// Refresh, until ctx ends (then it returns nil).
func (c *Cache) Run(ctx context.Context, inv Inventory) error {
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			// Let the record that brought the name go in, and the
			// rest of a snapshot bring theirs: one round for them all.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(settle):
			}
			c.Round(ctx, inv, false)
		case <-t.C:
			c.Round(ctx, inv, true)
		}
	}
}

// settle is how long Run waits after a new name before resolving it.
const settle = 200 * time.Millisecond

// users is who names which names, from the inventory.
type users struct {
	ids map[string][]string // name key -> hardware ids (at most maxIDs)
	n   map[string]int      // name key -> machines naming it
}

// maxIDs bounds the hardware ids a log line lists for one name.
const maxIDs = 5

func usersOf(inv Inventory) users {
	u := users{ids: map[string][]string{}, n: map[string]int{}}
	inv.Each(func(m inventory.Machine) bool {
		for _, k := range Names(m.Hardware()) {
			u.n[k]++
			if len(u.ids[k]) < maxIDs {
				u.ids[k] = append(u.ids[k], m.ID)
			}
		}
		return true
	})
	return u
}

// Names lists the time-server host names of a record (its addresses
// left out), in the cache's spelling, each once.
func Names(hw *hardware.Hardware) []string {
	var out []string
	for _, in := range hw.GetNetwork().GetInterfaces() {
		for _, s := range in.GetDhcp().GetTimeServers() {
			if spec.TimeServerIsName(s) {
				if k := key(s); !slices.Contains(out, k) {
					out = append(out, k)
				}
			}
		}
	}
	return out
}

// result is one lookup's outcome.
type result struct {
	name    string
	addrs   []netip.Addr // usable ones
	skipped []string     // addresses left out, with why
	err     error
}

// Round resolves the noted names, or with full every name in use (and
// forgets names no record uses any more), stores the answers, logs each
// name that gives no usable address once, with the hardware ids naming
// it, and has the records naming a changed name derived again. Run calls
// it; tests call it directly.
func (c *Cache) Round(ctx context.Context, inv Inventory, full bool) {
	u := usersOf(inv)
	c.mu.Lock()
	var todo []string
	if full {
		set := map[string]bool{}
		for k := range u.n {
			set[k] = true
		}
		for k := range c.pending {
			set[k] = true
		}
		todo = sortedKeys(set)
		if len(todo) > c.cfg.MaxNames {
			for _, k := range todo[c.cfg.MaxNames:] {
				c.over[k] = true
				delete(set, k)
			}
			todo = todo[:c.cfg.MaxNames]
		}
		for k := range c.entries {
			if !set[k] {
				delete(c.entries, k)
			}
		}
		for _, k := range todo {
			if _, ok := c.entries[k]; !ok {
				c.entries[k] = nil
			}
		}
	} else {
		todo = sortedKeys(c.pending)
	}
	clear(c.pending)
	over := sortedKeys(c.over)
	clear(c.over)
	c.mu.Unlock()

	if len(over) > 0 {
		c.log.Warn("time servers: more host names in use than the cache holds; those beyond it are not resolved and left out of DHCP option 42",
			"limit", c.cfg.MaxNames, "names_over", len(over), "first", over[0], "hardware_ids", u.ids[over[0]])
	}
	results := c.resolve(ctx, todo)
	if ctx.Err() != nil {
		return // shutting down: keep what is known
	}

	var changed []string
	c.mu.Lock()
	for i := range results {
		r := &results[i]
		old, held := c.entries[r.name]
		if !held {
			continue // forgotten meanwhile (not possible today: one Round at a time)
		}
		next := r.addrs
		if r.err != nil && !isNotFound(r.err) && len(old) > 0 {
			next = old // a failing DNS server: keep the last answer
		}
		c.entries[r.name] = next
		if !slices.Equal(old, next) {
			changed = append(changed, r.name)
		}
	}
	c.mu.Unlock()

	for _, r := range results {
		c.report(r, u)
	}
	if len(changed) > 0 {
		n := inv.Rederive(func(hw *hardware.Hardware) bool {
			for _, k := range Names(hw) {
				if slices.Contains(changed, k) {
					return true
				}
			}
			return false
		})
		c.log.Info("time servers: host names resolved to new addresses; DHCP answers updated", "names", changed, "machines", n)
	}
}

// report logs a name that gives no usable address, or leaves addresses
// out, once per round.
func (c *Cache) report(r result, u users) {
	c.mu.RLock()
	kept := c.entries[r.name]
	c.mu.RUnlock()
	attrs := []any{"name", r.name, "hardware_ids", u.ids[r.name], "machines", u.n[r.name]}
	switch {
	case r.err != nil && len(kept) > 0:
		c.log.Warn("time servers: host name not resolved; DHCP option 42 keeps its last addresses until it resolves again",
			append(attrs, "err", r.err, "addresses", kept)...)
	case r.err != nil:
		c.log.Warn("time servers: host name not resolved; left out of DHCP option 42 (retried at the next refresh)",
			append(attrs, "err", r.err)...)
	case len(r.addrs) == 0:
		c.log.Warn("time servers: host name resolves to no address a machine can use; left out of DHCP option 42",
			append(attrs, "skipped", r.skipped)...)
	case len(r.skipped) > 0:
		c.log.Info("time servers: some addresses of a host name left out of DHCP option 42",
			append(attrs, "addresses", r.addrs, "skipped", r.skipped)...)
	}
}

// resolve looks names up, Parallel at a time, each within Timeout.
func (c *Cache) resolve(ctx context.Context, names []string) []result {
	out := make([]result, len(names))
	sem := make(chan struct{}, c.cfg.Parallel)
	var wg sync.WaitGroup
	for i, name := range names {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			lctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			defer cancel()
			addrs, err := c.res.LookupNetIP(lctx, "ip4", name)
			out[i] = result{name: name, err: err}
			if err == nil {
				out[i].addrs, out[i].skipped = Usable(addrs, c.cfg.MaxAddrs)
			}
		}()
	}
	wg.Wait()
	return out
}

// Usable picks from a name's addresses those option 42 can hand a
// machine: IPv4 only (option 42 carries IPv4 addresses; RFC 2132 8.3),
// each once, in the resolver's order, at most max; left out, with the
// reason: IPv6 addresses, loopback (127.0.0.0/8, as localhost resolves:
// a machine would ask itself for the time), unspecified, multicast and
// broadcast addresses, and those beyond max.
func Usable(addrs []netip.Addr, max int) (ok []netip.Addr, skipped []string) {
	for _, a := range addrs {
		a = a.Unmap()
		why := ""
		switch {
		case !a.Is4():
			why = "IPv6: option 42 carries IPv4 only"
		case a.IsLoopback():
			why = "loopback: the machine would ask itself"
		case a.IsUnspecified():
			why = "unspecified"
		case a.IsMulticast():
			why = "multicast"
		case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			why = "broadcast"
		case slices.Contains(ok, a):
			continue
		case len(ok) >= max:
			why = fmt.Sprintf("beyond the %d addresses kept per name", max)
		}
		if why != "" {
			skipped = append(skipped, a.String()+" ("+why+")")
			continue
		}
		ok = append(ok, a)
	}
	return ok, skipped
}

// isNotFound reports an answer that the name does not exist (as opposed
// to a resolver failing).
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
