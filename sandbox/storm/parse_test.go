//go:build bench

package storm

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseChainURL(t *testing.T) {
	for _, tc := range []struct {
		name, auto, want string
		bad              bool
	}{
		{name: "herd's auto.ipxe shape",
			auto: "#!ipxe\nset herdmac ${${iface}/mac:hexhyp}\n:herd_chain\nchain --autofree http://10.30.255.254:8080/machines/${herdmac}/boot.ipxe?iface=${iface}&net0=${net0/mac:hexhyp}&net1=${net1/mac:hexhyp} || goto herd_chain_retry\nexit\n",
			want: "http://10.30.255.254:8080/machines/02-5e-00-00-00-07/boot.ipxe?iface=net0&net0=02-5e-00-00-00-07&net1="},
		{name: "no chain line", auto: "#!ipxe\necho hello\n", bad: true},
		{name: "chain without --autofree", auto: "chain http://x/y\n", bad: true},
		{name: "empty", auto: "", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chainURL(tc.auto, "02-5e-00-00-00-07")
			if tc.bad != (err != nil) || got != tc.want {
				t.Errorf("chainURL = %q, %v; want %q (error: %t)", got, err, tc.want, tc.bad)
			}
		})
	}
}

func TestParseExpand(t *testing.T) {
	vars := map[string]string{"a": "1", "net0/mac:hexhyp": "02-00"}
	for in, want := range map[string]string{
		"":                      "",
		"plain":                 "plain",
		"${a}":                  "1",
		"x${a}y${a}z":           "x1y1z",
		"${unset}":              "",
		"m=${net0/mac:hexhyp}&": "m=02-00&",
		"open ${a":              "open ${a",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseScript(t *testing.T) {
	const osie = "#!ipxe\necho herd: hardware x\n:herd_kernel\n" +
		"kernel --name vmlinuz http://b/osie/vmlinuz-x86_64 grpc_authority=127.0.0.1:42113 worker_id=hw-1 herd.token=tok.en= herd.metadata=http://b:50061 console=ttyS0,115200 || goto herd_kernel_retry\n" +
		"imgfetch --name herdev http://b/events?event=kernel_fetched&hardware_id=hw-1&mac=02-00 && imgfree herdev ||\n" +
		"initrd --name initrd http://b/osie/initramfs-x86_64 || goto herd_initrd_retry\n" +
		"imgfetch --name herdev http://b/events?event=initrd_fetched&hardware_id=hw-1&mac=02-00 && imgfree herdev ||\n" +
		"boot || goto herd_boot_failed\n"
	sc, err := parseScript(osie)
	if err != nil {
		t.Fatal(err)
	}
	if sc.kernel != "http://b/osie/vmlinuz-x86_64" || sc.initrd != "http://b/osie/initramfs-x86_64" {
		t.Errorf("kernel %q, initrd %q", sc.kernel, sc.initrd)
	}
	wantArgs := map[string]string{"grpc_authority": "127.0.0.1:42113", "worker_id": "hw-1", "herd.token": "tok.en=",
		"herd.metadata": "http://b:50061", "console": "ttyS0,115200"}
	if !maps.Equal(sc.args, wantArgs) {
		t.Errorf("args %v, want %v", sc.args, wantArgs)
	}
	if len(sc.events) != 2 || !strings.Contains(sc.events[1], "initrd_fetched") {
		t.Errorf("events %q", sc.events)
	}
	for name, s := range map[string]string{
		"not allowed": "#!ipxe\necho herd: netboot is not allowed\nexit\n",
		"no initrd":   "#!ipxe\nkernel http://b/k a=b\nboot\n",
		"empty":       "",
	} {
		if _, err := parseScript(s); err == nil {
			t.Errorf("%s: parseScript(%q) took it", name, s)
		}
	}
}

// tree is a fake metadata service for crawl: pure logic, no network.
func tree(pages map[string]string) func(string, bool) ([]byte, error) {
	return func(url string, allow404 bool) ([]byte, error) {
		if v, ok := pages[url]; ok {
			return []byte(v), nil
		}
		if allow404 {
			return nil, nil
		}
		return nil, errors.New("404 " + url)
	}
}

func TestParseCrawl(t *testing.T) {
	const r = "http://m/2009-04-04/"
	got, err := crawl(context.Background(), tree(map[string]string{
		r + "meta-data/":                            "hostname\ninstance-id\npublic-keys/\nplacement/\n",
		r + "meta-data/hostname":                    "storm-1",
		r + "meta-data/instance-id":                 "hw-1",
		r + "meta-data/public-keys/":                "0=ops\n",
		r + "meta-data/public-keys/0/":              "openssh-key\n",
		r + "meta-data/public-keys/0/openssh-key":   "ssh-ed25519 AAAA",
		r + "meta-data/placement/":                  "availability-zone\n",
		r + "meta-data/placement/availability-zone": "room-1",
	}), r)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"meta-data/hostname", "meta-data/instance-id", "meta-data/placement/availability-zone", "meta-data/public-keys/0/openssh-key", "user-data"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) || got["meta-data/hostname"] != "storm-1" {
		t.Errorf("crawl = %v, want the leaves %v", got, want)
	}

	if _, err := crawl(context.Background(), tree(map[string]string{r + "meta-data/": "hostname\n"}), r); err == nil {
		t.Error("a listed leaf that is not there: no error")
	}
	// A listing that names itself over and over is cut at maxCrawl.
	loop := map[string]string{}
	dir := "meta-data/"
	for range maxCrawl + 5 {
		loop[r+dir] = "a/\n"
		dir += "a/"
	}
	if _, err := crawl(context.Background(), tree(loop), r); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("endless listing: %v, want the bound's error", err)
	}
}

func TestParsePercentile(t *testing.T) {
	ds := func(ms ...int) []time.Duration {
		out := make([]time.Duration, len(ms))
		for i, m := range ms {
			out[i] = time.Duration(m) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{ds(7), 0.99, 7 * time.Millisecond},
		{ds(4, 1, 3, 2), 0.5, 2 * time.Millisecond},
		{ds(4, 1, 3, 2), 0.99, 4 * time.Millisecond},
		{ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.9, 9 * time.Millisecond},
	} {
		if got := percentile(slices.Clone(tc.in), tc.q); got != tc.want {
			t.Errorf("percentile(%v, %g) = %v, want %v", tc.in, tc.q, got, tc.want)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	const tail = " S 1 1234 1234 0 -1 4194560 2113 0 0 0 %s 0 0 20 0 7 0 123456 1262940160 11706\n"
	for _, tc := range []struct {
		stat string
		want time.Duration
		bad  bool
	}{
		{stat: "42 (herd-boots)" + strings.Replace(tail, "%s", "37 12", 1), want: 490 * time.Millisecond},
		{stat: "42 (a) b) c)" + strings.Replace(tail, "%s", "0 100", 1), want: time.Second},
		{stat: "42 (herd-boots S 1", bad: true},
		{stat: "42 (x) S 1 2", bad: true},
		{stat: "42 (x)" + strings.Replace(tail, "%s", "-1 0", 1), bad: true},
	} {
		got, err := parseStatCPU(tc.stat)
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("parseStatCPU(%q) = %v, %v; want %v (error: %t)", tc.stat, got, err, tc.want, tc.bad)
		}
	}
}

func TestParseStatusKB(t *testing.T) {
	const status = "Name:\therd-boots\nVmHWM:\t   22528 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n"
	if got := statusKB(status, "VmHWM:"); got != 22528*1024 {
		t.Errorf("VmHWM %v", got)
	}
	if got := statusKB(status, "VmSwap:"); got != 0 {
		t.Errorf("absent VmSwap %v", got)
	}
}

func TestParseCause(t *testing.T) {
	for msg, want := range map[string]string{
		"GET http://b/osie/os.img: body after 5 bytes: context canceled\nnothing received for 1m0s": "stalled (nothing received for 60 s)",
		"GET http://b/osie/os.img: body after 31815165 bytes: unexpected EOF":                       "connection closed by the service mid-answer",
		"read tcp 10.30.0.1:5->10.30.255.254:8080: read: connection reset by peer":                  "connection closed by the service mid-answer",
		"GET http://b/x: body after 7 bytes: context deadline exceeded":                             "deadline exceeded",
		"rpc error: code = Unavailable desc = connection error":                                     "gRPC error",
		"GET http://b/auto.ipxe: 503 Service Unavailable: busy":                                     "HTTP 5xx",
		"ACK gave 10.30.0.9, the reservation is 10.30.0.8":                                          "other",
		"no answer to the DISCOVER within iPXE's 4 sends (15.00 s)":                                 "no DHCP answer within iPXE's retransmissions",
		"REQUEST answered with NAK: address taken":                                                  "DHCP NAK",
	} {
		if got := cause(errors.New(msg)); got != want {
			t.Errorf("cause(%q) = %q, want %q", msg, got, want)
		}
	}
}

func TestParseProcNet(t *testing.T) {
	snmp := "Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 42\nUdp: InDatagrams RcvbufErrors\nUdp: 7 3\n"
	m := map[string]int64{}
	if err := parseProcNet(snmp, m); err != nil {
		t.Fatal(err)
	}
	if m["Tcp.RetransSegs"] != 42 || m["Tcp.MaxConn"] != -1 || m["Udp.RcvbufErrors"] != 3 || len(m) != 5 {
		t.Fatalf("got %v", m)
	}
	for name, bad := range map[string]string{
		"odd lines":         "Tcp: A B\nTcp: 1 2\nUdp: A\n",
		"values short":      "Tcp: A B\nTcp: 1\n",
		"protocols differ":  "Tcp: A\nUdp: 1\n",
		"not a number":      "Tcp: A\nTcp: x\n",
		"no protocol colon": "Tcp A\nTcp 1\n",
	} {
		if err := parseProcNet(bad, map[string]int64{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	got, err := sockstatTCPMem("sockets: used 527\nTCP: inuse 509 orphan 0 tw 303 alloc 524 mem 46\nUDP: inuse 0 mem 0\n")
	if err != nil || got != 46 {
		t.Fatalf("sockstat TCP mem: %d, %v; want 46", got, err)
	}
	if _, err := sockstatTCPMem("UDP: inuse 0 mem 0\n"); err == nil {
		t.Fatal("sockstat without TCP: no error")
	}
}
