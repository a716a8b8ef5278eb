package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// outageRecord is the outage test's machine: hostname and kernel_args are
// what the change after the outage touches (one shows in the DHCP answer,
// the other in the machine's script).
func outageRecord(mac net.HardwareAddr, ip, hostname, kernelArgs string) *hardware.Hardware {
	return &hardware.Hardware{Id: hwKnown, Metadata: fmt.Sprintf(`{"boots": {"kernel_args": %q}}`, kernelArgs),
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: mac.String(), Hostname: hostname, LeaseTime: 600, Arch: "x86_64",
				Ip: &hardware.Hardware_DHCP_IP{Address: ip, Netmask: "255.255.255.0", Gateway: bootsIP}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		}}}}
}

// TestReliabilityServerOutageBoots (issue 16): herd-server stops under a
// real herd-boots. For the whole outage a real DHCP client (busybox
// udhcpc, our script) keeps getting its reservation, the machine's iPXE
// script is served unchanged over HTTP, and /healthz says 200 "degraded";
// once the server is back, a change pushed then reaches the script within
// a second and the next DHCP answer, and /healthz is "ok" again.
func TestReliabilityServerOutageBoots(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	realtest.Command(t, "busybox")
	outage := time.Duration(reliability.Size(3, 60)) * time.Second
	known := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x41}
	const reserved = "10.77.0.10"
	l := newLab(t, known, "--log-level", "info")
	ctx := context.Background()
	if _, err := l.hw.Push(ctx, &hardware.PushRequest{Data: outageRecord(known, reserved, "node1", "herd.outage=before")}); err != nil {
		t.Fatal(err)
	}
	l.waitMachines(t, 1)

	hc := l.cli.HTTPClient()
	scriptURL := bootsURL + "/machines/" + strings.ReplaceAll(known.String(), ":", "-") + "/boot.ipxe"
	fetch := func(url string) (int, string) {
		res, err := hc.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	healthz := func() (int, string) {
		code, body := fetch(bootsURL + "/healthz")
		var h struct{ Status string }
		_ = json.Unmarshal([]byte(body), &h)
		return code, h.Status
	}
	// udhcpc's script adds the leased address, from which the machine
	// then asks for its script (boots takes it only from there).
	lease := l.udhcpc(t)
	if lease["ip"] != reserved || lease["hostname"] != "node1" {
		t.Fatalf("lease before the outage: %v", lease)
	}
	code, script := fetch(scriptURL)
	if code != 200 || !strings.Contains(script, "herd.outage=before") {
		t.Fatalf("script before the outage: %d\n%s", code, script)
	}
	if code, status := healthz(); code != 200 || status != "ok" {
		t.Fatalf("/healthz before the outage: %d %q", code, status)
	}

	l.server.Stop()
	stopped := time.Now()
	for deadline := stopped.Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, status := healthz()
		if code == 200 && status == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz not degraded within 5s of the stop: %d %q", code, status)
		}
	}
	toDegraded := time.Since(stopped)

	leases, scripts, lost := 0, 0, 0
	for end := stopped.Add(outage); leases == 0 || time.Now().Before(end); {
		if v := l.udhcpc(t); v["ip"] != reserved || v["hostname"] != "node1" {
			lost++
			t.Errorf("lease %d during the outage: %v", leases, v)
		}
		leases++
		for range 5 {
			if code, got := fetch(scriptURL); code != 200 || got != script {
				lost++
				t.Errorf("script during the outage: %d\n%s", code, got)
			}
			scripts++
		}
		if code, status := healthz(); code != 200 || status != "degraded" {
			lost++
			t.Errorf("/healthz during the outage: %d %q, want 200 degraded", code, status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	down := time.Since(stopped)

	l.server.Restart()
	back := time.Now()
	hw := hardware.NewHardwareServiceClient(l.server.Dial(servertest.AdminToken))
	if _, err := hw.Push(ctx, &hardware.PushRequest{Data: outageRecord(known, reserved, "node1-renamed", "herd.outage=after")}); err != nil {
		t.Fatal(err)
	}
	pushed := time.Since(back)
	for deadline := back.Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if code, got := fetch(scriptURL); code == 200 && strings.Contains(got, "herd.outage=after") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the change never reached the script\n%s", l.log.String())
		}
	}
	toChange := time.Since(back)
	if toChange > time.Second {
		lost++
		t.Errorf("the change reached the script %v after herd-server came back, want within 1s", toChange)
	}
	for deadline := back.Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if code, status := healthz(); code == 200 && status == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz not ok again within 10s of the server's return")
		}
	}
	toOK := time.Since(back)
	if v := l.udhcpc(t); v["ip"] != reserved || v["hostname"] != "node1-renamed" {
		lost++
		t.Errorf("lease after the change: %v, want hostname node1-renamed", v)
	}

	reliability.Record(t, reliability.Row{
		Case: "herd-server down under herd-boots",
		Done: fmt.Sprintf("herd-server stopped (SIGINT) for %v under a real herd-boots; a machine took DHCP leases (busybox udhcpc) and fetched its iPXE script over HTTP throughout; "+
			"then the server restarted on the same ports and database and the machine's record changed (hostname, kernel_args)", down.Round(100*time.Millisecond)),
		Volume:   fmt.Sprintf("%d leases, %d script fetches during the outage", leases, scripts),
		Lost:     lost,
		Recovery: toChange,
		Notes: fmt.Sprintf("leases and scripts unchanged from memory during the outage; /healthz 200 degraded %v after the stop; "+
			"change in the script %v after the server was back (push took %v), in the next lease; /healthz ok after %v (-race build)",
			toDegraded.Round(time.Millisecond), toChange.Round(time.Millisecond), pushed.Round(time.Millisecond), toOK.Round(time.Millisecond)),
	})
}
