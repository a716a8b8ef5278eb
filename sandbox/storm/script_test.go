//go:build bench

package storm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// machine is simulated machine i: its record's MAC, address and id.
type machine struct {
	i    int
	mac  net.HardwareAddr
	ip   net.IP
	hwID string
}

func newMachine(i int) machine {
	mac, _ := net.ParseMAC(fmt.Sprintf("02:5e:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff))
	return machine{i: i, mac: mac, ip: net.ParseIP(machineIP(i)).To4(), hwID: fmt.Sprintf("00000000-0000-4000-8000-5e%010x", i)}
}

// machineIP is machine i's reserved address: 250 to a /24 of 10.30/16
// (10.30.255.x holds herd-boots and the relay).
func machineIP(i int) string { return fmt.Sprintf("10.30.%d.%d", i/250, i%250+1) }

func (m machine) hexhyp() string   { return strings.ReplaceAll(m.mac.String(), ":", "-") }
func (m machine) hostname() string { return fmt.Sprintf("storm-%d", m.i) }

// chainURL is the URL auto.ipxe chains to, its settings expanded as iPXE
// expands them for a machine booting from net0 with MAC hexhyp (and no
// other interface).
func chainURL(auto, hexhyp string) (string, error) {
	for _, line := range strings.Split(auto, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "chain" && f[1] == "--autofree" {
			return expand(f[2], map[string]string{"herdmac": hexhyp, "iface": "net0", "net0/mac:hexhyp": hexhyp}), nil
		}
	}
	return "", errors.New("auto.ipxe has no `chain --autofree URL` line")
}

// expand replaces each ${name} by vars[name] ("" when unset, as iPXE does).
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return b.String() + s
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return b.String() + s
		}
		b.WriteString(s[:i])
		b.WriteString(vars[s[i+2:i+j]])
		s = s[i+j+1:]
	}
}

// script is what a machine takes from its boot script.
type script struct {
	kernel, initrd string
	args           map[string]string // the kernel command line's key=value
	events         []string          // boot event URLs (the GET form)
}

// parseScript reads the kernel, initrd and imgfetch lines of a machine
// script as iPXE runs them; the `|| goto` fallbacks are not followed.
func parseScript(s string) (script, error) {
	sc := script{args: map[string]string{}}
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, " || ")
		line, _, _ = strings.Cut(line, " && ")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		u := slices.IndexFunc(f, func(x string) bool { return strings.HasPrefix(x, "http://") || strings.HasPrefix(x, "https://") })
		if u < 0 {
			continue
		}
		switch f[0] {
		case "kernel":
			sc.kernel = f[u]
			for _, a := range f[u+1:] {
				if k, v, ok := strings.Cut(a, "="); ok {
					sc.args[k] = v
				}
			}
		case "initrd":
			sc.initrd = f[u]
		case "imgfetch":
			if strings.Contains(f[u], "/events?") {
				sc.events = append(sc.events, f[u])
			}
		}
	}
	if sc.kernel == "" || sc.initrd == "" {
		return sc, fmt.Errorf("script without a kernel or initrd URL: %.300q", s)
	}
	return sc, nil
}

// maxCrawl bounds the entries of the metadata walk: a listing is outside
// input, and one that names itself forever must not walk forever.
const maxCrawl = 200

// crawl walks the EC2 tree under root (".../2009-04-04/") as cloud-init's
// EC2 data source does: meta-data/ listings depth first (a "0=name" entry
// is the directory 0/), every leaf read, then user-data (404: none). It
// returns each leaf's value by its path under root.
func crawl(ctx context.Context, get func(url string, allow404 bool) ([]byte, error), root string) (map[string]string, error) {
	out := map[string]string{}
	dirs := []string{"meta-data/"}
	seen := 0
	for len(dirs) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dir := dirs[0]
		dirs = dirs[1:]
		body, err := get(root+dir, false)
		if err != nil {
			return nil, err
		}
		for _, e := range strings.Split(strings.TrimSpace(string(body)), "\n") {
			if e == "" {
				continue
			}
			if seen++; seen > maxCrawl {
				return nil, fmt.Errorf("more than %d entries under %s", maxCrawl, root)
			}
			if k, _, ok := strings.Cut(e, "="); ok {
				e = k + "/"
			}
			if strings.HasSuffix(e, "/") {
				dirs = append(dirs, dir+e)
				continue
			}
			v, err := get(root+dir+e, false)
			if err != nil {
				return nil, err
			}
			out[dir+e] = string(v)
		}
	}
	ud, err := get(root+"user-data", true)
	if err != nil {
		return nil, err
	}
	out["user-data"] = string(ud)
	return out, nil
}

// percentile is the nearest-rank q-quantile (0 < q ≤ 1) of ds, sorted in place.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	k := int(q*float64(len(ds))+0.999999) - 1
	return ds[min(max(k, 0), len(ds)-1)]
}

// cause is the class of a machine's error, for the error table.
func cause(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "nothing received for"):
		return "stalled (nothing received for 60 s)"
	case strings.Contains(msg, "unexpected EOF"), strings.Contains(msg, "connection reset"):
		return "connection closed by the service mid-answer"
	case strings.Contains(msg, "deadline exceeded"):
		return "deadline exceeded"
	case strings.Contains(msg, "rpc error"):
		return "gRPC error"
	case strings.Contains(msg, "GET ") && strings.Contains(msg, ": 5"):
		return "HTTP 5xx"
	case strings.Contains(msg, "within iPXE's"):
		return "no DHCP answer within iPXE's retransmissions"
	case strings.Contains(msg, "answered with NAK"):
		return "DHCP NAK"
	}
	return "other"
}
