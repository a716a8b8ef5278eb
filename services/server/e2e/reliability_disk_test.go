package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/pgtest"
	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// TestReliabilityDiskFull (issue 16): the disk under PostgreSQL's data
// directory (a tmpfs of its own, the WAL beside it) fills up while the
// fleet reports and an admin pushes hardware records too large for a page.
// For as long as it is full, writes that need space are refused
// ResourceExhausted naming the cause ("disk full"), never Internal, and
// the workers retry; reads (hardware ByID and All, GetWorkflow) and a real
// herd-metadata's answers go on. Once the filler file is deleted the fleet
// resumes by itself and every workflow ends SUCCESS with one RUNNING and
// one SUCCESS event per action; a refused push left nothing, an accepted
// one reads back whole.
func TestReliabilityDiskFull(t *testing.T) {
	full := time.Duration(reliability.Size(3, 30)) * time.Second
	pg, disk := pgtest.NewDiskCluster(t, 160<<20)
	s := servertest.StartOn(t, pg.NewDatabase(), "--log-level", "info")
	admin := hardware.NewHardwareServiceClient(s.Dial(adminToken))
	wc := workflow.NewWorkflowServiceClient(s.Dial(adminToken))
	servertest.PushHardware(t, admin, 0, 1, metadataMachine)
	md := startMetadataProcess(t, s)
	wantHostname := "200 " + metadataHostname
	if got := md.get(t, "/latest/meta-data/hostname"); got != wantHostname {
		t.Fatalf("herd-metadata before the disk filled: hostname %q, want %q", got, wantHostname)
	}

	// Slower than the other faults' fleets: the reports left once the disk
	// is full must outlast the pages PostgreSQL had already added to its
	// tables, which take rows without asking the file system.
	f := newFleet(t, s, fleetSize(), 2*fleetPeriod())
	workflowID := firstWorkflow(t, wc)
	p := &diskProbe{admin: admin, wc: wc, md: md, workflowID: workflowID, seen: map[codes.Code]int{}}
	var filled int64
	var freed time.Time
	workersRefused := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.seen[codes.ResourceExhausted] > 0
	}
	fill := fault{name: "disk full", at: 0.25, do: func() (time.Time, time.Time) {
		away := time.Now()
		filled = disk.Fill()
		// Full for at least `full`, and until a worker's report has been
		// refused (bounded: the checks below say so if none was). Each
		// round tops the filler up again, taking back whatever PostgreSQL
		// freed meanwhile (a checkpoint's recycled files).
		for end, limit := time.Now().Add(full), time.Now().Add(time.Minute); time.Now().Before(end) || (!workersRefused() && time.Now().Before(limit)); {
			p.round(t)
			filled += disk.Fill()
			time.Sleep(100 * time.Millisecond)
		}
		disk.Free()
		freed = time.Now()
		return away, freed
	}}
	figures, o, lost, took := runWithFaults(t, f, []fault{fill})
	lost += p.lost

	if p.exhausted == 0 {
		lost++
		t.Errorf("no push was refused ResourceExhausted while the disk was full (%d accepted): the fault did not land", p.accepted)
	}
	f.mu.Lock()
	workersExhausted := f.seen[codes.ResourceExhausted]
	f.mu.Unlock()
	if workersExhausted == 0 {
		lost++
		t.Errorf("no worker report was refused while the disk was full: the fault did not land")
	}
	// Once the space is back: a push is accepted again, no refused push
	// left a record, every accepted one reads back whole.
	afterFree := time.Now()
	if _, err := admin.Push(context.Background(), &hardware.PushRequest{Data: largeMachine(uuid.NewString())}); err != nil {
		lost++
		t.Errorf("push once the space is back: %v", err)
	}
	pushOK := time.Since(afterFree)
	lost += p.checkPushes(t)
	// herd-metadata follows a change pushed once the space is back.
	changed := metadataMachine(0)
	changed.Metadata = strings.Replace(changed.Metadata, metadataHostname, metadataHostname+"-after", 1)
	if _, err := admin.Push(context.Background(), &hardware.PushRequest{Data: changed}); err != nil {
		t.Fatalf("push the change: %v", err)
	}
	pushed := time.Now()
	for md.get(t, "/latest/meta-data/hostname") != wantHostname+"-after" {
		if time.Since(pushed) > 5*time.Second {
			lost++
			t.Errorf("herd-metadata did not serve the change pushed after the disk was freed within 5 s")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mdFollow := time.Since(pushed)

	fg := figures[0]
	reliability.Record(t, reliability.Row{
		Case: "PostgreSQL's disk full",
		Done: fmt.Sprintf("PostgreSQL's data directory on a 160 MiB tmpfs (WAL beside it), filled to the last byte (%d MiB filler file, topped up every round) at 1/4 of the reports for %v and until a worker's report was refused, then the filler deleted; meanwhile %d simulated workers report (one report per %v each, Unavailable and ResourceExhausted retried with backoff as herd-worker does), an admin pushes 96 KiB hardware records, and hardware ByID/All, GetWorkflow and a real herd-metadata are read, in rounds 100 ms apart",
			filled>>20, full, len(f.workers), f.period),
		Volume: fmt.Sprintf("%d workflows × %d actions, %d reports (%d resent); %d pushes while full (%d refused ResourceExhausted \"disk full\", %d accepted), %d reads; %d action events recorded, %d workflows SUCCESS, in %v",
			len(f.workers), fleetActions, f.reports(), f.resent.Load(), p.accepted+p.exhausted, p.exhausted, p.accepted, p.reads, o.events, o.succeeded, took.Round(100*time.Millisecond)),
		Lost:     lost,
		Recovery: fg.recovery - fg.down,
		Notes: fmt.Sprintf("recovery: from deleting the filler to the first report answered; a push once freed answered in %v; herd-metadata served a change pushed then in %v; answers the workers got: %s; the admin's pushes while full: %s (-race build)",
			pushOK.Round(time.Millisecond), mdFollow.Round(time.Millisecond), f.seenCodes(), codeCounts(p.seen)),
	})
}

// metadataHostname is the hostname herd-metadata serves metadataMachine.
const metadataHostname = "disk-probe"

// metadataMachine is a machine herd-metadata knows by a loopback address,
// so the test can ask as that machine.
func metadataMachine(int) *hardware.Hardware {
	return &hardware.Hardware{
		Id:       "00000000-0000-4000-8000-00000000d15c",
		Metadata: `{"instance":{"hostname":"` + metadataHostname + `","ip_addresses":[{"address":"127.0.0.61","address_family":4,"public":false,"management":true}]}}`,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: "02:d1:5c:00:00:01", Hostname: metadataHostname, Arch: "x86_64",
				Ip: &hardware.Hardware_DHCP_IP{Address: "10.201.0.61", Netmask: "255.255.255.0"}},
		}}},
	}
}

// largeMachine is a hardware record whose metadata (96 KiB of random
// base64) takes pages of its own, so storing it needs new space.
func largeMachine(id string) *hardware.Hardware {
	blob := make([]byte, 72<<10)
	_, _ = rand.Read(blob)
	n := uint32(uuid.MustParse(id).ID())
	return &hardware.Hardware{
		Id:       id,
		Metadata: `{"instance":{"hostname":"large"},"blob":"` + base64.StdEncoding.EncodeToString(blob) + `"}`,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: fmt.Sprintf("02:d2:%02x:%02x:%02x:%02x", n>>24, n>>16&0xff, n>>8&0xff, n&0xff), Arch: "x86_64"},
		}}},
	}
}

// firstWorkflow is the id of one of the fleet's workflows.
func firstWorkflow(t *testing.T, wc workflow.WorkflowServiceClient) string {
	t.Helper()
	stream, err := wc.ListWorkflows(context.Background(), &workflow.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return w.GetId()
}

// diskProbe is what the admin and the readers do while the disk is full.
type diskProbe struct {
	admin      hardware.HardwareServiceClient
	wc         workflow.WorkflowServiceClient
	md         *metadataProcess
	workflowID string

	seen      map[codes.Code]int            // answers to the pushes
	pushed    map[string]*hardware.Hardware // accepted pushes, by id
	refused   []string                      // ids of pushes refused ResourceExhausted
	accepted  int
	exhausted int
	reads     int
	lost      int // reads that failed, pushes refused otherwise
}

// round is one push and one of each read.
func (p *diskProbe) round(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hw := largeMachine(uuid.NewString())
	_, err := p.admin.Push(ctx, &hardware.PushRequest{Data: hw})
	code := status.Code(err)
	p.seen[code]++
	switch {
	case err == nil:
		p.accepted++
		if p.pushed == nil {
			p.pushed = map[string]*hardware.Hardware{}
		}
		p.pushed[hw.GetId()] = hw
	case code == codes.ResourceExhausted && strings.Contains(status.Convert(err).Message(), "disk full"):
		p.exhausted++
		p.refused = append(p.refused, hw.GetId())
	default:
		p.lost++
		t.Errorf("push on a full disk: %v, want OK or ResourceExhausted naming \"disk full\"", err)
	}

	p.reads += 4
	if _, err := p.admin.ByID(ctx, &hardware.GetRequest{Id: fleetHW(0)}); err != nil {
		p.lost++
		t.Errorf("hardware ByID on a full disk: %v", err)
	}
	if n, err := countAll(ctx, p.admin); err != nil || n < fleetSize() {
		p.lost++
		t.Errorf("hardware All on a full disk: %d records, %v", n, err)
	}
	if w, err := p.wc.GetWorkflow(ctx, &workflow.GetRequest{Id: p.workflowID}); err != nil || w.GetId() != p.workflowID {
		p.lost++
		t.Errorf("GetWorkflow on a full disk: %v", err)
	}
	if got := p.md.get(t, "/latest/meta-data/hostname"); got != "200 "+metadataHostname {
		p.lost++
		t.Errorf("herd-metadata on a full disk: hostname %q", got)
	}
}

// checkPushes reads back every push made while the disk was full: the
// refused ones must not exist, the accepted ones must be whole.
func (p *diskProbe) checkPushes(t *testing.T) (lost int) {
	t.Helper()
	ctx := context.Background()
	for _, id := range p.refused {
		if _, err := p.admin.ByID(ctx, &hardware.GetRequest{Id: id}); status.Code(err) != codes.NotFound {
			lost++
			t.Errorf("hardware %s, refused on a full disk, reads back: %v", id, err)
		}
	}
	for id, hw := range p.pushed {
		got, err := p.admin.ByID(ctx, &hardware.GetRequest{Id: id})
		if err != nil || !sameJSON([]byte(got.GetMetadata()), []byte(hw.GetMetadata())) {
			lost++
			t.Errorf("hardware %s, accepted on a full disk, reads back changed (%v)", id, err)
		}
	}
	return lost
}

// countAll is the number of records hardware All streams.
func countAll(ctx context.Context, c hardware.HardwareServiceClient) (int, error) {
	stream, err := c.All(ctx, &hardware.Empty{})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// metadataProcess is a real herd-metadata, built from its module and run
// as a process of the test's own, stopped by its pid.
type metadataProcess struct {
	base string
	logs *servertest.Buffer
}

// startMetadataProcess builds herd-metadata and runs it against s with
// the service token, on a free loopback port.
func startMetadataProcess(t *testing.T, s *servertest.Server) *metadataProcess {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herd-metadata")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/herd-metal/herd/services/metadata/cmd/herd-metadata").CombinedOutput(); err != nil {
		t.Fatalf("build herd-metadata: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	m := &metadataProcess{base: "http://" + addr, logs: &servertest.Buffer{}}
	cmd := exec.Command(bin, "--metadata-addr", addr, "--cert-url", s.HTTP+"/cert", "--log-format", "text")
	cmd.Env = append(os.Environ(), "HERD_GRPC_AUTHORITY="+s.GRPC, "HERD_TOKEN="+servertest.ServiceToken)
	cmd.Stdout, cmd.Stderr = m.logs, m.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("herd-metadata log:\n%s", tail(m.logs.String(), 40))
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, _ := m.request("127.0.0.1", "/healthz"); code == http.StatusOK {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("herd-metadata not healthy after 30 s\n%s", m.logs)
		}
	}
}

// get asks as metadataMachine (from its loopback address) and returns
// "CODE BODY".
func (m *metadataProcess) get(t *testing.T, path string) string {
	t.Helper()
	code, body := m.request("127.0.0.61", path)
	return fmt.Sprint(code, " ", body)
}

func (m *metadataProcess) request(from, path string) (int, string) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get(m.base + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
