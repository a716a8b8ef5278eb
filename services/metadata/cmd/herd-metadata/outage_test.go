package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
)

// crawlAll is every path a machine sees (crawlPaths) with its answer.
func crawlAll(t *testing.T, from, base string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range crawlPaths(t, from, base, "/", "/latest/", "/2009-04-04/") {
		code, body := get(t, from, base+p)
		out[p] = fmt.Sprint(code, " ", body)
	}
	return out
}

// health is /healthz's code and status field.
func health(t *testing.T, base string) (int, string) {
	t.Helper()
	code, body := get(t, "127.0.0.1", base+"/healthz")
	var h struct{ Status string }
	_ = json.Unmarshal([]byte(body), &h)
	return code, h.Status
}

// TestReliabilityServerOutageMetadata (issue 16): herd-server stops under
// a real herd-metadata. For the whole outage the machine's every path
// answers as before and /healthz says 200 "degraded"; once the server is
// back, a change pushed then is served within a second, and /healthz is
// "ok" again.
func TestReliabilityServerOutageMetadata(t *testing.T) {
	outage := time.Duration(reliability.Size(3, 60)) * time.Second
	s := servertest.Start(t)
	push(t, hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken)),
		record(1, "node-1", `, "userdata": "#cloud-config\nhostname: node-1\n"`))
	base := startMetadata(t, s, "127.0.0.1:0")
	from := alias(1)
	want := crawlAll(t, from, base)
	if len(want) < 20 || want["/latest/meta-data/hostname"] != "200 node-1" {
		t.Fatalf("before the outage: %d paths, hostname %q", len(want), want["/latest/meta-data/hostname"])
	}
	if code, status := health(t, base); code != 200 || status != "ok" {
		t.Fatalf("/healthz before the outage: %d %q", code, status)
	}

	s.Stop()
	stopped := time.Now()
	eventually(t, 5*time.Second, "/healthz degraded", func() bool {
		code, status := health(t, base)
		return code == 200 && status == "degraded"
	})
	toDegraded := time.Since(stopped)

	crawls, requests, lost := 0, 0, 0
	for end := stopped.Add(outage); crawls == 0 || time.Now().Before(end); crawls++ {
		got := crawlAll(t, from, base)
		requests += len(got)
		for p, w := range want {
			if got[p] != w {
				lost++
				t.Errorf("crawl %d during the outage: %s = %q, want %q", crawls, p, got[p], w)
			}
		}
		requests++
		if code, status := health(t, base); code != 200 || status != "degraded" {
			lost++
			t.Errorf("/healthz during the outage: %d %q, want 200 degraded", code, status)
		}
		time.Sleep(250 * time.Millisecond)
	}
	down := time.Since(stopped)

	s.Restart()
	back := time.Now()
	push(t, hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken)),
		record(1, "renamed-1", `, "userdata": "#cloud-config\nhostname: renamed-1\n"`))
	pushed := time.Since(back)
	eventually(t, 10*time.Second, "the change after the server came back", func() bool {
		code, body := get(t, from, base+"/latest/meta-data/hostname")
		return code == 200 && body == "renamed-1"
	})
	toChange := time.Since(back)
	eventually(t, 10*time.Second, "/healthz ok again", func() bool {
		code, status := health(t, base)
		return code == 200 && status == "ok"
	})
	toOK := time.Since(back)
	if toChange > time.Second {
		lost++
		t.Errorf("the change was served %v after herd-server came back, want within 1s", toChange)
	}
	if code, body := get(t, from, base+"/latest/user-data"); code != 200 || body != "#cloud-config\nhostname: renamed-1\n" {
		t.Errorf("user-data after the change: %d %q", code, body)
	}

	reliability.Record(t, reliability.Row{
		Case: "herd-server down under herd-metadata",
		Done: fmt.Sprintf("herd-server stopped (SIGINT) for %v under a real herd-metadata; the machine crawled all %d of its paths every 250 ms; "+
			"then the server restarted on the same ports and database and the machine's record changed", down.Round(100*time.Millisecond), len(want)),
		Volume:   fmt.Sprintf("%d crawls, %d requests during the outage", crawls, requests),
		Lost:     lost,
		Recovery: toChange,
		Notes: fmt.Sprintf("every answer unchanged from memory during the outage; /healthz 200 degraded %v after the stop; "+
			"change served %v after the server was back (push took %v), /healthz ok after %v (-race build)",
			toDegraded.Round(time.Millisecond), toChange.Round(time.Millisecond), pushed.Round(time.Millisecond), toOK.Round(time.Millisecond)),
	})
}
