package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
)

// TestReplicaFailover (issue 18): herd-metadata given two herd-server
// replicas keeps its inventory in step when one is killed: a change
// pushed to the other reaches the machine, and /healthz stays "ok". Each
// replica is killed in turn, so one of the kills cuts the Watch stream.
func TestReplicaFailover(t *testing.T) {
	r1 := servertest.Start(t)
	r2 := r1.Replica()
	push(t, hardware.NewHardwareServiceClient(r1.Dial(servertest.AdminToken)), record(1, "node-1", ""))
	base := startMetadata(t, r1, "127.0.0.1:0", "--server", r1.GRPC+","+r2.GRPC)
	from := alias(1)
	if code, body := get(t, from, base+"/latest/meta-data/hostname"); code != 200 || body != "node-1" {
		t.Fatalf("hostname before: %d %q", code, body)
	}
	for i, c := range []struct{ kill, other *servertest.Server }{{r1, r2}, {r2, r1}} {
		c.kill.Kill()
		killed := time.Now()
		name := fmt.Sprintf("node-%d", i+2)
		push(t, hardware.NewHardwareServiceClient(c.other.Dial(servertest.AdminToken)), record(1, name, ""))
		eventually(t, 10*time.Second, "the change pushed to the other replica served", func() bool {
			code, body := get(t, from, base+"/latest/meta-data/hostname")
			return code == 200 && body == name
		})
		t.Logf("kill %d: change served %v after the kill", i+1, time.Since(killed).Round(time.Millisecond))
		if code, status := health(t, base); code != 200 || status != "ok" {
			t.Fatalf("/healthz with one replica left: %d %q", code, status)
		}
		c.kill.Restart()
	}
}
