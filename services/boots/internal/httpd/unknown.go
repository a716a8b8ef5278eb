package httpd

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/herd-metal/herd/services/boots/internal/script"
)

// reasons are the unknown-caller metric's reason label values.
var reasons = []string{script.ReasonNoMAC, script.ReasonUnknownMAC, script.ReasonUnknownIP, script.ReasonOtherMachine, script.ReasonNoInterface,
	script.ReasonNotItsAddress}

const (
	// unknownLogEvery: at most one unknown-caller line per MAC (or address,
	// without a MAC) this often; the next says how many it held back.
	// auto.ipxe retries every few seconds: a machine stuck on it logs a
	// line or so per try window, not one per request.
	unknownLogEvery = 10 * time.Second
	// unknownLogKeys bounds the callers remembered for that; beyond it,
	// new callers share one allowance.
	unknownLogKeys = 4096
	// unknownLogLines bounds the unknown-caller lines of all callers per
	// unknownLogEvery (3 a second), whatever a flood of new MACs does.
	unknownLogLines = 30
)

// ifaceName is what an iface query may hold to be logged and echoed back:
// iPXE's interface names (net0) or what a script may have set instead.
var ifaceName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,15}$`)

// unknownCaller counts and logs (throttled) a request boots could not
// identify, and returns what boots knows of the caller for its answer.
func (s *Server) unknownCaller(r *http.Request, route, macStr, why string) script.Unknown {
	s.unknowns.WithLabelValues(route, why).Inc()
	u := callerOf(r.URL.Query(), macStr, remoteIP(r).String(), why)
	knownID := ""
	// Another of the caller's interfaces, as auto.ipxe reported them, that
	// herd knows: the request most likely left from the wrong one.
	for _, n := range reportedNICs(r.URL.Query()) {
		if n.name == u.Iface || n.mac.String() == u.MAC {
			continue
		}
		if m, ok := s.machines.ByMAC(n.mac); ok {
			u.KnownIface, u.KnownMAC, knownID = n.name, n.mac.String(), m.ID
			break
		}
	}
	s.logUnknown(r, route, u, knownID)
	return u
}

// callerOf reads what an unknown caller's request says of it: the MAC it
// named and the interface auto.ipxe identified by. A value that is not
// what auto.ipxe sends is left out: these are echoed to the console and
// logged.
func callerOf(q url.Values, macStr, remote, why string) script.Unknown {
	u := script.Unknown{Remote: remote, Reason: why}
	if mac, err := ParseMAC(macStr); err == nil {
		u.MAC = mac.String()
	}
	if v := q.Get("iface"); ifaceName.MatchString(v) {
		u.Iface = v
	}
	return u
}

// nic is one interface auto.ipxe reported.
type nic struct {
	name string
	mac  net.HardwareAddr
}

// reportedNICs reads auto.ipxe's net0= ... net3= (script.AutoQuery), in
// order, skipping the empty and the malformed.
func reportedNICs(q url.Values) []nic {
	var out []nic
	for n := range script.AutoNICs {
		name := fmt.Sprintf("net%d", n)
		if mac, err := ParseMAC(q.Get(name)); err == nil {
			out = append(out, nic{name, mac})
		}
	}
	return out
}

// logUnknown writes the warning for an unknown caller, unless one for the
// same caller went out less than unknownLogEvery ago.
func (s *Server) logUnknown(r *http.Request, route string, u script.Unknown, knownID string) {
	key := u.MAC
	if key == "" {
		key = u.Remote
	}
	ok, held := s.quiet.allow(key, s.now())
	if !ok {
		return
	}
	msg := "http: script for an unknown caller"
	if route == "event" {
		msg = "http: boot event from an unknown caller"
	}
	attrs := []any{"mac", u.MAC, "remote", r.RemoteAddr, "iface", u.Iface, "reason", u.Reason, "hint", script.UnknownHint(u)}
	if u.MAC == "" {
		named := macFrom(r, route)
		if len(named) > 40 {
			named = named[:40] + "…"
		}
		attrs = append(attrs, "named", named)
	}
	if u.KnownIface != "" {
		attrs = append(attrs, "known_iface", u.KnownIface, "known_mac", u.KnownMAC, "hardware_id", knownID)
	}
	if held > 0 {
		attrs = append(attrs, "suppressed", held)
	}
	s.log.Warn(msg, attrs...)
}

func macFrom(r *http.Request, route string) string {
	if route == "event" {
		return r.Form.Get("mac")
	}
	return r.PathValue("mac")
}

// throttle lets one line per key through per interval, and at most
// perInterval lines in all per interval, counting the ones it holds back
// for the key's next line. It remembers at most max keys: when full, it
// forgets the ones quiet for an interval (at most once per interval, so a
// flood of new keys costs no scan per request; what they held back is
// lost, the metric has it), and new keys beyond that share one entry.
type throttle struct {
	mu          sync.Mutex
	interval    time.Duration
	max         int
	perInterval int
	keys        map[string]*throttled
	lastSweep   time.Time
	// The current interval's start and the lines let through in it.
	window time.Time
	lines  int
}

type throttled struct {
	last time.Time // of the last line let through; zero: none yet
	held int
}

// overflowKey is the entry keys beyond max share.
const overflowKey = "\x00overflow"

func newThrottle(interval time.Duration, max, perInterval int) *throttle {
	return &throttle{interval: interval, max: max, perInterval: perInterval, keys: map[string]*throttled{}}
}

// allow reports whether a line for key may go out at now, and how many
// lines for it were held back since the last that did.
func (t *throttle) allow(key string, now time.Time) (ok bool, held int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.keys[key]
	if e == nil {
		if len(t.keys) >= t.max && now.Sub(t.lastSweep) >= t.interval {
			t.lastSweep = now
			for k, v := range t.keys {
				if now.Sub(v.last) >= t.interval {
					delete(t.keys, k)
				}
			}
		}
		if len(t.keys) >= t.max {
			key = overflowKey
		}
		if e = t.keys[key]; e == nil {
			e = &throttled{}
			t.keys[key] = e
		}
	}
	if now.Sub(t.window) >= t.interval {
		t.window, t.lines = now, 0
	}
	if (!e.last.IsZero() && now.Sub(e.last) < t.interval) || t.lines >= t.perInterval {
		e.held++
		return false, 0
	}
	t.lines++
	held, e.held, e.last = e.held, 0, now
	return true, held
}
