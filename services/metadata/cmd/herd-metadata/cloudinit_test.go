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
}
