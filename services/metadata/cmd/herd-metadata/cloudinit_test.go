package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// crawl is cloud-init's own EC2 crawl (Debian's cloud-init package), as
// its EC2 datasource runs it at boot, printed as JSON.
const crawl = `
import json, sys
from cloudinit.sources.helpers import ec2
base, version = sys.argv[1], sys.argv[2]
md = ec2.get_instance_metadata(api_version=version, metadata_address=base, timeout=5, retries=0)
ud = ec2.get_instance_userdata(api_version=version, metadata_address=base, timeout=5, retries=0)
if isinstance(ud, bytes):
    ud = ud.decode()
print(json.dumps({"meta": md, "user": ud}))
`

// python is Debian's interpreter, the one cloud-init is installed for (a
// python3 earlier in PATH, e.g. pyenv's, does not see it).
const python = "/usr/bin/python3"

// needCloudInit fails under CI=true when cloud-init is missing (make test
// installs it: services/metadata/deps.txt), and skips elsewhere.
func needCloudInit(t *testing.T) {
	t.Helper()
	err := exec.Command(python, "-c", "import cloudinit.sources.helpers.ec2").Run()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cloud-init's Python package is missing (Debian package cloud-init; make deps installs it): %v", err)
	}
	t.Skipf("cloud-init's Python package is missing (Debian package cloud-init): %v", err)
}

func TestCloudInitCrawl(t *testing.T) {
	needCloudInit(t)
	s := servertest.Start(t)
	hw := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	// The crawling process connects from 127.0.0.1 (the kernel's source for
	// every loopback destination), so machine 1's document names that
	// address; machine 2 is there to be left out.
	m1 := record(1, "node-1", `, "userdata": "#cloud-config\nhostname: node-1\nruncmd: [echo hi]\n"`)
	m1.Metadata = strings.Replace(m1.Metadata, alias(1), "127.0.0.1", 1)
	push(t, hw, m1)
	push(t, hw, record(2, "node-2", `, "userdata": "#cloud-config\nhostname: node-2\n"`))
	base := startMetadata(t, s, "127.0.0.1:0")
	// Machine 1 has been provisioned: its workflow ended a moment ago, and
	// cloud-init's crawls are its installed OS's first boot.
	wf := provisioned(t, s, m1)

	for _, version := range []string{"latest", "2009-04-04"} {
		t.Run(version, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, python, "-c", crawl, base, version)
			cmd.Env = append(os.Environ(), "http_proxy=", "HTTP_PROXY=", "no_proxy=*", "NO_PROXY=*")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("cloud-init crawl: %v\n%s", err, stderr.String())
			}
			var got struct {
				Meta map[string]any `json:"meta"`
				User string         `json:"user"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("crawl output %q: %v\n%s", out, err, stderr.String())
			}
			want := map[string]any{
				"hostname":       "node-1",
				"local-hostname": "node-1",
				"instance-id":    m1.GetId(),
				"local-ipv4":     "127.0.0.1",
				"public-keys":    map[string]any{"m1@herd": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI1 m1@herd"},
				"placement":      map[string]any{"availability-zone": "lab"},
				"plan":           "c3.small",
				"tags":           "t1",
				"operating-system": map[string]any{
					"slug": "debian_12", "distro": "debian", "version": "12",
				},
			}
			if !reflect.DeepEqual(got.Meta, want) {
				t.Errorf("cloud-init meta-data:\n got %v\nwant %v\n%s", got.Meta, want, stderr.String())
			}
			if got.User != "#cloud-config\nhostname: node-1\nruncmd: [echo hi]\n" {
				t.Errorf("cloud-init user-data: %q", got.User)
			}
		})
	}

	// The ended workflow's timeline notes the reading once for both
	// crawls.
	const note = "metadata read by cloud-init (first: "
	var events string
	eventually(t, 20*time.Second, "the metadata read noted on workflow "+wf, func() bool {
		events = s.MustHerd("", "workflow", "events", wf)
		return strings.Contains(events, note)
	})
	time.Sleep(time.Second) // a second note would have been sent by now
	if n := strings.Count(s.MustHerd("", "workflow", "events", wf), note); n != 1 {
		t.Fatalf("%d metadata read notes on the workflow, want 1:\n%s", n, events)
	}
}

// provisioned runs a one-action workflow for hw to SUCCESS, as its worker
// would, and returns its id.
func provisioned(t *testing.T, s *servertest.Server, hw *hardware.Hardware) string {
	t.Helper()
	s.MustHerd("version: \"0.1\"\nname: provision\ntasks:\n  - name: os\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: write\n        image: noop\n", "template", "create")
	wf := s.CreateWorkflow("provision", `{"device_1":"`+hw.GetNetwork().GetInterfaces()[0].GetDhcp().GetMac()+`"}`)
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw.GetId())))
	for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := w.ReportActionStatus(ctx, &workflow.WorkflowActionStatus{WorkflowId: wf, WorkerId: hw.GetId(),
			TaskName: "os", ActionName: "write", ActionStatus: st})
		cancel()
		if err != nil {
			t.Fatalf("report %s: %v", st, err)
		}
	}
	return wf
}
