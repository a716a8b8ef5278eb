package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The provisioning network lives in its own network namespace: a bridge
// with boots' address and a tap device per VM on it. OVH adds a second
// bridge, the provider's network, with a second tap per VM.
const (
	defaultNetns = "herd-sbx"
	bridge       = "br0"
	hostIP       = "10.88.0.1"
	prefixLen    = 24
	vmNetmask    = "255.255.255.0"
	registry     = hostIP + ":5000"
	grpcAddr     = hostIP + ":42113"
	httpAddr     = hostIP + ":42114"
	bootsHTTP    = hostIP + ":80"
	metaAddr     = hostIP + ":50061"
	bmcHTTP      = hostIP + ":42115" // herd-bmc's /healthz and /metrics
	pgPort       = "5432"
	actionsTag   = "sandbox"

	providerBridge = "br1"
	providerIP     = "10.89.0.1"
)

// nsName is the namespace of this run, set once from --netns before
// anything starts (make test-e2e uses its own, so a make sandbox left up
// is not touched by the tests).
var nsName = defaultNetns

func nsPath() string { return "/run/netns/" + nsName }

// netnsCommands are the ip commands that make the namespace, in order.
func netnsCommands(ms []machine) [][]string {
	ipn := func(a ...string) []string { return append([]string{"ip", "-n", nsName}, a...) }
	cmds := [][]string{
		{"ip", "netns", "add", nsName},
		ipn("link", "set", "lo", "up"),
	}
	addBridge := func(name, ip string) {
		cmds = append(cmds,
			ipn("link", "add", name, "type", "bridge"),
			ipn("addr", "add", fmt.Sprintf("%s/%d", ip, prefixLen), "dev", name),
			ipn("link", "set", name, "up"))
	}
	addTap := func(name, br string) {
		cmds = append(cmds,
			ipn("tuntap", "add", "dev", name, "mode", "tap"),
			ipn("link", "set", name, "master", br),
			ipn("link", "set", name, "up"))
	}
	addBridge(bridge, hostIP)
	if len(ms) > 0 && ms[0].ProviderTap != "" {
		addBridge(providerBridge, providerIP)
	}
	if len(ms) > 0 && ms[0].BMCIP != "" {
		// The BMC network: herd-bmc's side and the BMCs' side of a veth.
		cmds = append(cmds,
			ipn("link", "add", bmcLink, "type", "veth", "peer", "name", bmcPeer),
			ipn("addr", "add", bmcNetIP+"/24", "dev", bmcLink),
			ipn("link", "set", bmcLink, "up"),
			ipn("link", "set", bmcPeer, "up"))
		for _, m := range ms {
			cmds = append(cmds, ipn("addr", "add", m.BMCIP+"/24", "dev", bmcPeer))
		}
	}
	for _, m := range ms {
		addTap(m.Tap, bridge)
		if m.ProviderTap != "" {
			addTap(m.ProviderTap, providerBridge)
		}
	}
	return cmds
}

func makeNetns(ms []machine) error {
	for _, c := range netnsCommands(ms) {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func netnsExists() bool {
	_, err := os.Stat(nsPath())
	return err == nil
}

// deleteNetns removes the namespace, and with it the bridge and the tap.
func deleteNetns() error {
	if !netnsExists() {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", nsName).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", nsName, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs f on a thread switched into the namespace: a socket f
// makes is made there, and stays there. The thread goes back to the host
// namespace before it is released (or is dropped with its goroutine if
// that fails).
func inNetns(f func() error) error { return inNetnsAt(nsPath(), f) }

// inNetnsAt is inNetns for the namespace at path.
func inNetnsAt(path string, f func() error) error {
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	ns, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", path, err)
	}
	ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: Go ends it with this goroutine.
		return errors.Join(ferr, fmt.Errorf("back to the host namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// dialInNetns opens a connection from inside the namespace.
func dialInNetns(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(func() error {
		var err error
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil && c != nil {
		c.Close()
		c = nil
	}
	return c, err
}

// nsClient is an HTTP client whose connections start inside the namespace.
func nsClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: dialInNetns, DisableKeepAlives: true},
	}
}

// waitHTTP polls url (inside the namespace) until it answers 200, the
// process ends or within passes.
func waitHTTP(ctx context.Context, url string, p *proc, within time.Duration) error {
	c := nsClient()
	deadline := time.Now().Add(within)
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := c.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			last = res.Status
		} else {
			last = err.Error()
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited (%v) before %s answered", p.name, p.err, url)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s: %s", url, within, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
