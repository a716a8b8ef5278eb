package main

import (
	"strings"
	"testing"
)

func TestServerReplicas(t *testing.T) {
	rs := serverReplicas(3)
	if got := authority(rs); got != "10.88.0.1:42113,10.88.0.1:42123,10.88.0.1:42133" {
		t.Errorf("authority %q", got)
	}
	if rs[0].name != "herd-server" || rs[2].name != "herd-server-3" || rs[1].http != "10.88.0.1:42124" {
		t.Errorf("replicas %+v", rs)
	}
	// Replica 1 keeps the single server's ports: grpcAddr, httpAddr.
	if one := serverReplicas(1); one[0].grpc != grpcAddr || one[0].http != httpAddr {
		t.Errorf("one replica %+v, want %s %s", one[0], grpcAddr, httpAddr)
	}
	sb := &sandbox{dir: "/tmp/s"}
	one, two := sb.serverConn(serverReplicas(1)), sb.serverConn(serverReplicas(2))
	if got := strings.Join(one.flags(), " "); got != "--server 10.88.0.1:42113 --cert-url http://10.88.0.1:42114/cert" {
		t.Errorf("one replica's flags %q", got)
	}
	if got := strings.Join(one.env("t"), " "); got != "HERD_GRPC_AUTHORITY=10.88.0.1:42113 HERD_CERT_URL=http://10.88.0.1:42114/cert HERD_TOKEN=t" {
		t.Errorf("one replica's CLI environment %q", got)
	}
	if got := strings.Join(two.flags(), " "); got != "--server 10.88.0.1:42113,10.88.0.1:42123 --ca-file /tmp/s/server/ca.pem" {
		t.Errorf("two replicas' flags %q", got)
	}
	if got := strings.Join(two.env("t"), " "); got != "HERD_GRPC_AUTHORITY=10.88.0.1:42113,10.88.0.1:42123 HERD_CA_FILE=/tmp/s/server/ca.pem HERD_TOKEN=t" {
		t.Errorf("two replicas' CLI environment %q", got)
	}
}

func TestCheckReplicas(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    options
		err  string // a part of the error; "": none
	}{
		{"one", options{serverReplicas: 1, stack: stackProcess}, ""},
		{"three", options{serverReplicas: 3, stack: stackProcess}, ""},
		{"zero", options{serverReplicas: 0, stack: stackProcess}, "--server-replicas 0: want 1 to 3"},
		{"four", options{serverReplicas: 4, stack: stackProcess}, "want 1 to 3"},
		{"compose", options{serverReplicas: 2, stack: stackCompose}, "not supported with --stack compose"},
		{"compose, one", options{serverReplicas: 1, stack: stackCompose}, ""},
		{"kill with two", options{serverReplicas: 2, stack: stackProcess, fault: faultKillServer, faultDuring: []string{"image2disk"}}, ""},
		{"kill with one", options{serverReplicas: 1, stack: stackProcess, fault: faultKillServer, faultDuring: []string{"image2disk"}}, "needs --server-replicas 2 or more"},
		{"two kills of two", options{serverReplicas: 2, stack: stackProcess, fault: faultKillServer, faultDuring: []string{"image2disk", "writefile"}}, "would leave none"},
		{"two kills of three", options{serverReplicas: 3, stack: stackProcess, fault: faultKillServer, faultDuring: []string{"image2disk", "writefile"}}, ""},
		{"reboot with one", options{serverReplicas: 1, stack: stackProcess, fault: faultOSIEReboot, faultDuring: []string{"image2disk"}}, ""},
	} {
		err := checkReplicas(tc.o)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	// Through the flags: refused before anything starts, exit 2.
	for _, args := range [][]string{
		{"up", "--fault", "kill-server"},
		{"up", "--server-replicas", "2", "--stack", "compose"},
		{"up", "--server-replicas", "9"},
	} {
		var errb strings.Builder
		if _, _, code := parseArgs(args, &errb); code != 2 || !strings.Contains(errb.String(), "--server-replicas") {
			t.Errorf("%q: exit %d: %s", args, code, errb.String())
		}
	}
}

func TestKillVerdict(t *testing.T) {
	at, ev := eventClock()
	good := []event{
		{Task: "boot", Action: "boot", State: "RUNNING", CreatedAt: at(1)},
		ev("image2disk", "RUNNING", 20), ev("image2disk", "SUCCESS", 80),
		ev("writefile", "RUNNING", 80), ev("writefile", "SUCCESS", 120),
		ev("reboot", "RUNNING", 120), ev("reboot", "SUCCESS", 125),
	}
	kill := func(replica int, action string, s float64) serverKill {
		return serverKill{Replica: replica, Action: action, At: at(s), Report: at(s + 3)}
	}
	for _, tc := range []struct {
		name    string
		evs     []event
		kills   []serverKill
		planned []string
		timer   bool
		want    []string // each a part of one problem; none: no problem
	}{
		{"killed mid-image", good, []serverKill{kill(1, "image2disk", 30)}, []string{"image2disk"}, true, nil},
		{"two killed", good, []serverKill{kill(1, "image2disk", 30), kill(2, "writefile", 90)}, []string{"image2disk", "writefile"}, true, nil},
		{"another machine", good, nil, []string{"image2disk"}, false, nil},
		{"not killed", good, nil, []string{"image2disk"}, true, []string{"0 herd-server replica(s) killed of the 1 planned"}},
		{"killed after SUCCESS", good, []serverKill{kill(1, "image2disk", 85)}, []string{"image2disk"}, true,
			[]string{"replica 1's kill came after image2disk's SUCCESS"}},
		{"no report after", good, []serverKill{{Replica: 1, Action: "image2disk", At: at(30)}}, []string{"image2disk"}, true,
			[]string{"replica 1's kill: no action report"}},
		{"SUCCESS recorded twice", append(append([]event(nil), good...), ev("image2disk", "SUCCESS", 81)),
			[]serverKill{kill(1, "image2disk", 30)}, []string{"image2disk"}, true,
			[]string{"install/image2disk reported SUCCESS 2 times", "install/image2disk: 1 RUNNING, 2 SUCCESS"}},
		{"RUNNING recorded twice", append(append([]event(nil), good[:2]...), append([]event{ev("image2disk", "RUNNING", 31)}, good[2:]...)...),
			[]serverKill{kill(1, "image2disk", 30)}, []string{"image2disk"}, true, []string{"install/image2disk: 2 RUNNING, 1 SUCCESS"}},
		{"failed", append(append([]event(nil), good[:2]...), ev("image2disk", "FAILED", 40)),
			[]serverKill{kill(1, "image2disk", 30)}, []string{"image2disk"}, true, []string{"install/image2disk: 1 RUNNING, 0 SUCCESS and 1 other"}},
	} {
		checkProblems(t, tc.name, killVerdict(tc.evs, tc.kills, tc.planned, tc.timer), tc.want)
	}
}

func TestOSIESettings(t *testing.T) {
	for _, tc := range []struct {
		name, console, server, certURL string
		ok                             bool
	}{
		{"two replicas", "[    2.1] x\r\ntime=2026-12-04T19:00:01Z level=INFO msg=\"kernel command line parsed\" server=10.88.0.1:42113,10.88.0.1:42123 worker_id=hw-1 token_set=true cert_url=http://10.88.0.1:80/osie/herd-ca.pem metadata=http://10.88.0.1:50061\r\n",
			"10.88.0.1:42113,10.88.0.1:42123", "http://10.88.0.1:80/osie/herd-ca.pem", true},
		{"one", `msg="kernel command line parsed" server=10.88.0.1:42113 cert_url=http://10.88.0.1:42114/cert`, "10.88.0.1:42113", "http://10.88.0.1:42114/cert", true},
		{"no server", `msg="kernel command line parsed" worker_id=hw-1`, "", "", true},
		{"none", "msg=\"herd OSIE init starting\"\nserver=10.88.0.1:42113\n", "", "", false},
		{"empty", "", "", "", false},
	} {
		server, certURL, ok := osieSettings(tc.console)
		if server != tc.server || certURL != tc.certURL || ok != tc.ok {
			t.Errorf("%s: %q %q %v, want %q %q %v", tc.name, server, certURL, ok, tc.server, tc.certURL, tc.ok)
		}
	}
}
