package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/bmc/internal/ipmisim"
	"github.com/herd-metal/herd/services/bmc/internal/redfish/redfishtest"
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, true)) }

const bmcToken = "herd-bmc-test-token"

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBMC runs herd-bmc in process against s until the test ends (or
// stop is called); it must stop cleanly. Its log goes to logs when given.
func startBMC(t *testing.T, s *servertest.Server, extra ...string) (stop func()) {
	return startBMCLogging(t, s, &syncBuffer{}, extra...)
}

func startBMCLogging(t *testing.T, s *servertest.Server, logs *syncBuffer, extra ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	env := map[string]string{"HERD_GRPC_AUTHORITY": s.GRPC, "HERD_TOKEN": bmcToken}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	go func() {
		args := append([]string{"--bmc-http-addr", "127.0.0.1:0", "--cert-url", s.HTTP + "/cert",
			"--agent", "bmc-test", "--log-format", "text", "--log-level", "debug"}, extra...)
		done <- run(ctx, args, lookup, logs, func(a net.Addr) { ready <- a })
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("herd-bmc ended: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("herd-bmc did not start\n%s", logs)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("herd-bmc: %v\n%s", err, logs)
			}
			if t.Failed() {
				t.Logf("herd-bmc log:\n%s", logs)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// machineRecord is a hardware record whose BMC is at addr:port.
func machineRecord(id, mac, ip, addr string, port int, credential string) *hardware.Hardware {
	return &hardware.Hardware{
		Id: id,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: mac, Hostname: "m-" + id[:4],
				Ip: &hardware.Hardware_DHCP_IP{Address: ip, Netmask: "255.255.255.0", Gateway: "10.1.0.1"}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true},
		}}},
		Bmc: &hardware.Hardware_BMC{Address: addr, Protocol: "ipmi", Port: int32(port), Credential: credential},
	}
}

// watchJob follows a job to its end and returns the states it went
// through.
func watchJob(t *testing.T, mc machine.MachineServiceClient, job *machine.Job) (*machine.Job, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stream, err := mc.WatchJob(ctx, &machine.GetJobRequest{Id: job.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	last := job
	for {
		j, err := stream.Recv()
		if err != nil {
			if len(states) == 0 || !strings.Contains(states[len(states)-1], "SUCCESS") && !strings.Contains(states[len(states)-1], "FAILED") && !strings.Contains(states[len(states)-1], "TIMEOUT") {
				t.Fatalf("watch of job %s ended after %v: %v", job.GetId(), states, err)
			}
			return last, states
		}
		last = j
		s := strings.TrimPrefix(j.GetState().String(), "JOB_STATE_")
		if n := len(j.GetAttempts()); s == "RUNNING" {
			s += "#" + strconv.Itoa(n)
		}
		if len(states) == 0 || states[len(states)-1] != s {
			states = append(states, s)
		}
	}
}

// TestPowerThroughIPMI: herd-server's jobs reach a real BMC (ipmi_sim)
// through herd-bmc and act on the real VM behind it; ipmitool agrees.
// A wrong password fails at once (no retry that could lock the account),
// an unreachable BMC ends TIMEOUT with bounded attempts, and with no
// herd-bmc the server's own timer ends the job TIMEOUT saying why.
func TestPowerThroughIPMI(t *testing.T) {
	sim := ipmisim.Start(t)
	s := servertest.Start(t, "--bmc-token", bmcToken, "--bmc-job-timeout", "10s", "--bmc-poll-interval", "0")
	admin := s.Dial(servertest.AdminToken)
	mc := machine.NewMachineServiceClient(admin)
	hc := hardware.NewHardwareServiceClient(admin)
	ctx := context.Background()

	for name, password := range map[string]string{"rack1": ipmisim.Password, "wrong": "not-the-Passw0rd"} {
		if _, err := mc.SetBMCCredential(ctx, &machine.SetBMCCredentialRequest{Name: name, Username: ipmisim.User, Password: password}); err != nil {
			t.Fatal(err)
		}
	}
	const good, bad, gone, silent = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
		"33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
	deadPort := freeUDPPort(t)
	// A BMC that takes packets and never answers: a socket we hold and
	// do not read.
	mute, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	for _, hw := range []*hardware.Hardware{
		machineRecord(good, "08:00:27:00:00:01", "10.1.0.11", sim.BMC.Host, sim.BMC.Port, "rack1"),
		machineRecord(bad, "08:00:27:00:00:02", "10.1.0.12", sim.BMC.Host, sim.BMC.Port, "wrong"),
		machineRecord(gone, "08:00:27:00:00:03", "10.1.0.13", "127.0.0.1", deadPort, "rack1"),
		machineRecord(silent, "08:00:27:00:00:04", "10.1.0.14", "127.0.0.1", mute.LocalAddr().(*net.UDPAddr).Port, "rack1"),
	} {
		if _, err := hc.Push(ctx, &hardware.PushRequest{Data: hw}); err != nil {
			t.Fatal(err)
		}
	}

	// The BMC agent's token opens herd-bmc's calls and nothing else.
	bmcConn := s.Dial(bmcToken)
	if _, err := hardware.NewHardwareServiceClient(bmcConn).ByID(ctx, &hardware.GetRequest{Id: good}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the BMC token read hardware: %v", err)
	}
	if _, err := machine.NewMachineServiceClient(bmcConn).Power(ctx, &machine.PowerRequest{HardwareId: good, Action: "on"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the BMC token asked for a job: %v", err)
	}

	// No herd-bmc yet: a job waits, then the server ends it TIMEOUT.
	lost, err := mc.Power(ctx, &machine.PowerRequest{HardwareId: good, Action: "status"})
	if err != nil {
		t.Fatal(err)
	}
	lostEnd, _ := watchJob(t, mc, lost)
	if lostEnd.GetState() != machine.JobState_JOB_STATE_TIMEOUT || !strings.Contains(lostEnd.GetMessage(), "no herd-bmc took the job") {
		t.Fatalf("an untaken job ended %v %q", lostEnd.GetState(), lostEnd.GetMessage())
	}

	bmcLog := &syncBuffer{}
	startBMCLogging(t, s, bmcLog, "--bmc-call-timeout", "1s", "--attempts", "3")

	run := func(req func() (*machine.Job, error)) (*machine.Job, []string) {
		t.Helper()
		j, err := req()
		if err != nil {
			t.Fatal(err)
		}
		if j.GetState() != machine.JobState_JOB_STATE_PENDING {
			t.Fatalf("a new job is %v", j.GetState())
		}
		return watchJob(t, mc, j)
	}
	wantSuccess := func(j *machine.Job, states []string) {
		t.Helper()
		if j.GetState() != machine.JobState_JOB_STATE_SUCCESS {
			t.Fatalf("job %v %s ended %v: %q (states %v)", j.GetKind(), j.GetAction(), j.GetState(), j.GetMessage(), states)
		}
	}

	j, states := run(func() (*machine.Job, error) {
		return mc.Power(ctx, &machine.PowerRequest{HardwareId: good, Action: "status"})
	})
	wantSuccess(j, states)
	if j.GetAnswer() != "off" || sim.QemuPid() != 0 {
		t.Fatalf("status answered %q with the VM pid %d", j.GetAnswer(), sim.QemuPid())
	}
	t.Logf("status job: states %v", states)

	// netboot: next boot from the network, and the VM powered on.
	j, states = run(func() (*machine.Job, error) {
		return mc.Netboot(ctx, &machine.NetbootRequest{HardwareId: good})
	})
	wantSuccess(j, states)
	if states[len(states)-2] != "RUNNING#1" {
		t.Fatalf("netboot states %v: want ... RUNNING#1 SUCCESS", states)
	}
	ipmisim.WaitFor(t, "the VM to run", func() bool { return sim.QemuPid() != 0 })
	if cl := sim.QemuCmdline(); !strings.Contains(cl, "order=n") {
		t.Fatalf("the VM does not boot from the network: %s", cl)
	}
	if out := sim.Ipmitool(t, "chassis", "power", "status"); !strings.Contains(out, "is on") {
		t.Fatalf("ipmitool: %s", out)
	}
	t.Logf("netboot job: states %v, answer %q", states, j.GetAnswer())

	j, states = run(func() (*machine.Job, error) {
		return mc.SetBootDevice(ctx, &machine.BootDeviceRequest{HardwareId: good, Device: "disk"})
	})
	wantSuccess(j, states)
	j, states = run(func() (*machine.Job, error) {
		return mc.Power(ctx, &machine.PowerRequest{HardwareId: good, Action: "off"})
	})
	wantSuccess(j, states)
	ipmisim.WaitFor(t, "the VM to stop", func() bool { return sim.QemuPid() == 0 })
	if out := sim.Ipmitool(t, "chassis", "power", "status"); !strings.Contains(out, "is off") {
		t.Fatalf("ipmitool: %s", out)
	}

	// The record's power state follows what the jobs learned.
	power, err := mc.ListPower(ctx, &machine.ListPowerRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, p := range power.GetMachines() {
		seen[p.GetHardwareId()] = p.GetState()
	}
	if seen[good] != "off" || len(seen) != 4 {
		t.Fatalf("power states %v", seen)
	}

	// Wrong password: FAILED after one attempt, naming the cause.
	j, states = run(func() (*machine.Job, error) {
		return mc.Power(ctx, &machine.PowerRequest{HardwareId: bad, Action: "on"})
	})
	if j.GetState() != machine.JobState_JOB_STATE_FAILED || len(j.GetAttempts()) != 1 ||
		!strings.Contains(j.GetMessage(), "authentication failed") || strings.Contains(j.GetMessage(), "not-the-Passw0rd") {
		t.Fatalf("wrong password: %v after %d attempts: %q (states %v)", j.GetState(), len(j.GetAttempts()), j.GetMessage(), states)
	}
	if sim.QemuPid() != 0 {
		t.Fatal("a wrong password powered the VM on")
	}

	// A BMC that hangs does not hold back another machine's job: the
	// silent BMC's job still runs when the good one has ended.
	hung, err := mc.Power(ctx, &machine.PowerRequest{HardwareId: silent, Action: "status"})
	if err != nil {
		t.Fatal(err)
	}
	j, states = run(func() (*machine.Job, error) {
		return mc.Power(ctx, &machine.PowerRequest{HardwareId: good, Action: "status"})
	})
	wantSuccess(j, states)
	if h, err := mc.GetJob(ctx, &machine.GetJobRequest{Id: hung.GetId()}); err != nil || h.GetState() != machine.JobState_JOB_STATE_RUNNING {
		t.Fatalf("the hung BMC's job is %v (%v) when the good one ended: want RUNNING", h.GetState(), err)
	}
	if h, _ := watchJob(t, mc, hung); h.GetState() != machine.JobState_JOB_STATE_TIMEOUT {
		t.Fatalf("the hung BMC's job ended %v", h.GetState())
	}

	// Refused (nothing listens): three bounded attempts, then FAILED.
	// Silent (packets taken, never answered): attempts time out, the job
	// ends TIMEOUT; neither is retried forever.
	for _, c := range []struct {
		hw   string
		want machine.JobState
		says string
	}{{gone, machine.JobState_JOB_STATE_FAILED, "unreachable"}, {silent, machine.JobState_JOB_STATE_TIMEOUT, "timed out"}} {
		j, states = run(func() (*machine.Job, error) {
			return mc.Power(ctx, &machine.PowerRequest{HardwareId: c.hw, Action: "status"})
		})
		if j.GetState() != c.want || len(j.GetAttempts()) != 3 || !strings.Contains(j.GetMessage(), c.says) {
			t.Fatalf("BMC %s: %v after %d attempts: %q (states %v)", c.hw, j.GetState(), len(j.GetAttempts()), j.GetMessage(), states)
		}
		t.Logf("BMC %s: states %v, %q", c.says, states, j.GetMessage())
	}

	// Every job is listed, newest first, with its attempts.
	list, err := mc.ListJobs(ctx, &machine.ListJobsRequest{HardwareId: good})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetJobs()); n != 6 {
		t.Fatalf("%d jobs of %s, want 6", n, good)
	}
	if k := list.GetJobs()[0].GetKind(); k != machine.JobKind_JOB_KIND_POWER_STATUS {
		t.Fatalf("newest job is %v", k)
	}
	// The CLI: the same jobs, followed to their end; the power column.
	out := s.MustHerd("", "machine", "power", "status", good)
	if !strings.Contains(out, "SUCCESS: off") {
		t.Fatalf("herd machine power status printed:\n%s", out)
	}
	out = s.MustHerd("", "hardware", "list")
	if !hasRow(out, "POWER") || !hasRow(out, good, "off") || !hasRow(out, bad, "unknown") {
		t.Fatalf("herd hardware list printed:\n%s", out)
	}
	out, errOut, code := s.Herd("", "machine", "power", "on", bad)
	if code != 1 || !strings.Contains(errOut, "ended FAILED") || !strings.Contains(errOut, "authentication failed") {
		t.Fatalf("herd machine power on with a wrong password: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := s.Herd("", "machine", "power", "sideways", good); code != 2 || !strings.Contains(errOut, "want on, off, cycle, reset or status") {
		t.Fatalf("a bad power action: exit %d: %s", code, errOut)
	}

	// workflow create --netboot: the machine is powered on by its BMC
	// and the workflow's events show the power steps.
	s.MustHerd(netbootTemplate, "template", "create", "--file", "-")
	out = s.MustHerd("", "workflow", "create", "-t", "netboot-test", "-r", `{"device_1":"08:00:27:00:00:01"}`, "--netboot")
	wf := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "Created Workflow: "))
	if !strings.Contains(out, "netboot SUCCESS") {
		t.Fatalf("workflow create --netboot printed:\n%s", out)
	}
	ipmisim.WaitFor(t, "the VM to run", func() bool { return sim.QemuPid() != 0 })
	events := s.MustHerd("", "workflow", "events", wf)
	for _, step := range []string{"bmc netboot PENDING: queued", "bmc netboot PENDING: taken by bmc-test", "bmc netboot RUNNING", "bmc netboot SUCCESS"} {
		if !strings.Contains(events, step) {
			t.Fatalf("the workflow's events lack %q:\n%s", step, events)
		}
	}

	// No secret in any job record or power state (gRPC and REST), nor in
	// the server's or herd-bmc's log.
	all, err := mc.ListJobs(ctx, &machine.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(all)
	reads := map[string]string{"ListJobs": string(b), "server log": s.Stderr.String(), "herd-bmc log": bmcLog.String()}
	for _, path := range []string{"/v1/bmc/jobs", "/v1/machines/power", "/v1/bmc/jobs/" + j.GetId(), "/v1/bmc/credentials", "/v1/hardware/" + good} {
		code, body := s.Rest("GET", path, "", servertest.AdminToken)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		reads["GET "+path] = body
	}
	for what, text := range reads {
		for _, secret := range []string{ipmisim.Password, "not-the-Passw0rd"} {
			if strings.Contains(text, secret) {
				t.Fatalf("the secret %q shows in %s", secret, what)
			}
		}
	}
}

const netbootTemplate = `version: "0.1"
name: netboot-test
tasks:
  - name: "only"
    worker: "{{.device_1}}"
    actions:
      - name: "hello"
        image: busybox
        timeout: 60
`

// hasRow says whether a table line holds all the cells.
func hasRow(table string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		all := true
		for _, c := range cells {
			if !slices.Contains(f, c) {
				all = false
			}
		}
		if all {
			return true
		}
	}
	return false
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestPowerPoll: herd-server checks every BMC's power by itself, so a
// change made outside herd (here by ipmitool) reaches the record, the
// CLI's POWER column and the metric within a poll interval or two; the
// poll's own jobs do not pile up (one unfinished check per machine).
func TestPowerPoll(t *testing.T) {
	sim := ipmisim.Start(t)
	s := servertest.Start(t, "--bmc-token", bmcToken, "--bmc-poll-interval", "1s", "--bmc-job-timeout", "10s")
	admin := s.Dial(servertest.AdminToken)
	mc := machine.NewMachineServiceClient(admin)
	ctx := context.Background()
	if _, err := mc.SetBMCCredential(ctx, &machine.SetBMCCredentialRequest{Name: "rack1", Username: ipmisim.User, Password: ipmisim.Password}); err != nil {
		t.Fatal(err)
	}
	const id = "55555555-5555-4555-8555-555555555555"
	if _, err := hardware.NewHardwareServiceClient(admin).Push(ctx, &hardware.PushRequest{
		Data: machineRecord(id, "08:00:27:00:00:05", "10.1.0.15", sim.BMC.Host, sim.BMC.Port, "rack1")}); err != nil {
		t.Fatal(err)
	}
	startBMC(t, s)
	powerIs := func(want string) func() bool {
		return func() bool {
			list, err := mc.ListPower(ctx, &machine.ListPowerRequest{})
			return err == nil && len(list.GetMachines()) == 1 && list.GetMachines()[0].GetState() == want
		}
	}
	ipmisim.WaitFor(t, "the poll to learn the power is off", powerIs("off"))
	sim.Ipmitool(t, "chassis", "power", "on")
	ipmisim.WaitFor(t, "the VM to run", func() bool { return sim.QemuPid() != 0 })
	ipmisim.WaitFor(t, "the poll to learn the power is on", powerIs("on"))
	if out := s.MustHerd("", "hardware", "list"); !hasRow(out, id, "on") {
		t.Fatalf("herd hardware list printed:\n%s", out)
	}
	code, metrics := s.Rest("GET", "/metrics", "", "")
	if code != 200 || !strings.Contains(metrics, `herd_machines_power{state="on"} 1`) || !strings.Contains(metrics, `herd_machines_power{state="off"} 0`) {
		t.Fatalf("/metrics (%d) lacks the power counts:\n%s", code, grepLines(metrics, "herd_machines_power"))
	}
	jobs, err := mc.ListJobs(ctx, &machine.ListJobsRequest{HardwareId: id})
	if err != nil {
		t.Fatal(err)
	}
	unfinished := 0
	for _, j := range jobs.GetJobs() {
		if j.GetOrigin() != "poll" || j.GetKind() != machine.JobKind_JOB_KIND_POWER_STATUS {
			t.Fatalf("a job the poll did not make: %v", j)
		}
		if s := j.GetState(); s == machine.JobState_JOB_STATE_PENDING || s == machine.JobState_JOB_STATE_RUNNING {
			unfinished++
		}
	}
	if unfinished > 1 || len(jobs.GetJobs()) < 2 {
		t.Fatalf("%d poll jobs, %d unfinished", len(jobs.GetJobs()), unfinished)
	}
	t.Logf("%d poll jobs so far", len(jobs.GetJobs()))
}

// TestNetbootThroughRedfish: the same job path to a Redfish BMC (the
// fixture: no Redfish emulator is packaged for Debian), UEFI boot asked.
func TestNetbootThroughRedfish(t *testing.T) {
	rf := redfishtest.New("admin", "rf-Passw0rd")
	defer rf.Close()
	rf.SetPower(false)
	host, port := rf.HostPort()
	s := servertest.Start(t, "--bmc-token", bmcToken, "--bmc-poll-interval", "0")
	admin := s.Dial(servertest.AdminToken)
	mc := machine.NewMachineServiceClient(admin)
	ctx := context.Background()
	if _, err := mc.SetBMCCredential(ctx, &machine.SetBMCCredentialRequest{Name: "rf", Username: "admin", Password: "rf-Passw0rd"}); err != nil {
		t.Fatal(err)
	}
	const id = "66666666-6666-4666-8666-666666666666"
	hw := machineRecord(id, "08:00:27:00:00:06", "10.1.0.16", host, port, "rf")
	hw.Bmc.Protocol = "redfish"
	if _, err := hardware.NewHardwareServiceClient(admin).Push(ctx, &hardware.PushRequest{Data: hw}); err != nil {
		t.Fatal(err)
	}
	startBMC(t, s, "--redfish-scheme", "http")
	j, err := mc.Netboot(ctx, &machine.NetbootRequest{HardwareId: id, Efi: true})
	if err != nil {
		t.Fatal(err)
	}
	end, states := watchJob(t, mc, j)
	st := rf.State()
	if end.GetState() != machine.JobState_JOB_STATE_SUCCESS || st.PowerState != "On" ||
		st.BootSourceOverrideTarget != "Pxe" || st.BootSourceOverrideMode != "UEFI" || st.OpenSessions != 0 {
		t.Fatalf("netboot by Redfish: %v %q (states %v), BMC state %+v", end.GetState(), end.GetMessage(), states, st)
	}
	t.Logf("redfish netboot: states %v, resets %v", states, st.Resets)
}

// TestJobLimits: one job at a time per BMC, and --max-jobs over all. Two
// BMCs that take packets and never answer make each attempt last the
// call timeout, so jobs that ran at once would overlap.
func TestJobLimits(t *testing.T) {
	s := servertest.Start(t, "--bmc-token", bmcToken, "--bmc-poll-interval", "0", "--bmc-job-timeout", "60s")
	admin := s.Dial(servertest.AdminToken)
	mc := machine.NewMachineServiceClient(admin)
	hc := hardware.NewHardwareServiceClient(admin)
	ctx := context.Background()
	if _, err := mc.SetBMCCredential(ctx, &machine.SetBMCCredentialRequest{Name: "rack1", Username: "u", Password: "p"}); err != nil {
		t.Fatal(err)
	}
	bmcOf := map[string]int{} // hardware id -> BMC port
	for b := range 2 {
		mute, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer mute.Close()
		port := mute.LocalAddr().(*net.UDPAddr).Port
		for m := range 3 {
			id := fmt.Sprintf("7777777%d-0000-4000-8000-00000000000%d", b, m)
			hw := machineRecord(id, fmt.Sprintf("08:00:27:00:0%d:0%d", b+1, m+1), fmt.Sprintf("10.1.%d.%d", b+1, m+10), "127.0.0.1", port, "rack1")
			if _, err := hc.Push(ctx, &hardware.PushRequest{Data: hw}); err != nil {
				t.Fatal(err)
			}
			bmcOf[id] = port
		}
	}
	type span struct{ start, end time.Time }
	runAll := func(maxJobs string) map[int][]span {
		t.Helper()
		stop := startBMC(t, s, "--bmc-call-timeout", "1s", "--attempts", "1", "--max-jobs", maxJobs)
		defer stop()
		var jobs []*machine.Job
		for id := range bmcOf {
			j, err := mc.Power(ctx, &machine.PowerRequest{HardwareId: id, Action: "status"})
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, j)
		}
		spans := map[int][]span{}
		for _, j := range jobs {
			end, states := watchJob(t, mc, j)
			if end.GetState() != machine.JobState_JOB_STATE_TIMEOUT || len(end.GetAttempts()) != 1 {
				t.Fatalf("job %s: %v after %d attempts (states %v): %s", j.GetId(), end.GetState(), len(end.GetAttempts()), states, end.GetMessage())
			}
			a := end.GetAttempts()[0]
			spans[bmcOf[j.GetHardwareId()]] = append(spans[bmcOf[j.GetHardwareId()]], span{a.GetStart().AsTime(), a.GetEnd().AsTime()})
		}
		return spans
	}
	overlap := func(a, b span) bool { return a.start.Before(b.end) && b.start.Before(a.end) }
	anyOverlap := func(xs, ys []span, same bool) bool {
		for i, x := range xs {
			for j, y := range ys {
				if (!same || i < j) && overlap(x, y) {
					return true
				}
			}
		}
		return false
	}

	spans := runAll("16")
	var ports []int
	for p, ss := range spans {
		ports = append(ports, p)
		if anyOverlap(ss, ss, true) {
			t.Fatalf("jobs of one BMC ran at once: %v", ss)
		}
	}
	if !anyOverlap(spans[ports[0]], spans[ports[1]], false) {
		t.Fatalf("jobs of two BMCs never ran at once with --max-jobs 16: %v", spans)
	}

	spans = runAll("1")
	all := append(spans[ports[0]], spans[ports[1]]...)
	if anyOverlap(all, all, true) {
		t.Fatalf("two jobs ran at once with --max-jobs 1: %v", all)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestParse(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--agent", "a/b"}, `--agent "a/b"`},
		{[]string{"--agent", ""}, `--agent ""`},
		{[]string{"--max-jobs", "0"}, "--max-jobs 0: want at least 1"},
		{[]string{"--attempts", "0"}, "--attempts 0: want at least 1"},
		{[]string{"--bmc-call-timeout", "1ms"}, "--bmc-call-timeout 1ms: want at least 100ms"},
		{[]string{"--redfish-scheme", "ftp"}, `--redfish-scheme "ftp": want https or http`},
		{[]string{"extra"}, `unexpected arguments ["extra"]`},
	} {
		_, err := parse(c.args, none, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
	err := run(context.Background(), []string{"--server", "127.0.0.1:1"}, none, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("no token: %v", err)
	}
}

// TestServerAway: a wrong token ends herd-bmc with a clear error; while
// herd-server is down its /healthz says degraded (200), and it takes
// jobs again once the server is back.
func TestServerAway(t *testing.T) {
	s := servertest.Start(t, "--bmc-token", bmcToken, "--bmc-poll-interval", "0")
	env := map[string]string{"HERD_GRPC_AUTHORITY": s.GRPC, "HERD_TOKEN": "not-the-bmc-token"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, []string{"--bmc-http-addr", "127.0.0.1:0", "--cert-url", s.HTTP + "/cert"}, lookup, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "herd-server refused herd-bmc") || !strings.Contains(err.Error(), "invalid token") {
		t.Fatalf("a wrong token: %v", err)
	}

	addr := make(chan net.Addr, 1)
	logs := &syncBuffer{}
	env["HERD_TOKEN"] = bmcToken
	bctx, bcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(bctx, []string{"--bmc-http-addr", "127.0.0.1:0", "--cert-url", s.HTTP + "/cert", "--log-format", "text"}, lookup, logs, func(a net.Addr) { addr <- a })
	}()
	defer func() {
		bcancel()
		if err := <-done; err != nil {
			t.Errorf("herd-bmc: %v\n%s", err, logs)
		}
	}()
	health := "http://" + (<-addr).String() + "/healthz"
	get := func() (int, string) {
		res, err := http.Get(health)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("healthz with herd-server up: %d %s", code, body)
	}
	s.Stop()
	ipmisim.WaitFor(t, "healthz to say degraded", func() bool {
		code, body := get()
		return code == 200 && strings.Contains(body, "degraded") && strings.Contains(body, "herd-server unreachable")
	})
	s.Restart()
	ipmisim.WaitFor(t, "healthz to say ok again", func() bool {
		code, body := get()
		return code == 200 && strings.Contains(body, `"ok"`)
	})
	// It takes jobs again: one for a BMC where nothing listens ends
	// FAILED, unreachable, by herd-bmc's hand.
	admin := s.Dial(servertest.AdminToken)
	mc := machine.NewMachineServiceClient(admin)
	if _, err := mc.SetBMCCredential(ctx, &machine.SetBMCCredentialRequest{Name: "rack1", Username: "u", Password: "p"}); err != nil {
		t.Fatal(err)
	}
	const id = "88888888-8888-4888-8888-888888888888"
	if _, err := hardware.NewHardwareServiceClient(admin).Push(ctx, &hardware.PushRequest{
		Data: machineRecord(id, "08:00:27:00:00:08", "10.1.0.18", "127.0.0.1", freeUDPPort(t), "rack1")}); err != nil {
		t.Fatal(err)
	}
	j, err := mc.Power(ctx, &machine.PowerRequest{HardwareId: id, Action: "status"})
	if err != nil {
		t.Fatal(err)
	}
	if end, states := watchJob(t, mc, j); end.GetState() != machine.JobState_JOB_STATE_FAILED || !strings.Contains(end.GetMessage(), "unreachable") {
		t.Fatalf("after the restart: %v %q (states %v)", end.GetState(), end.GetMessage(), states)
	}
}
