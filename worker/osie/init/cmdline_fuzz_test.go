package main

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseCmdline: whatever the kernel command line holds, the init's
// parse never panics and is deterministic; what it accepts holds only
// values the rest of the init can use (a 64-hex-digit CA pin, a MAC of a
// real link-layer size, a syslog address that dials) and a worker
// environment without a NUL or newline that would break exec or smuggle
// a variable.
func FuzzParseCmdline(f *testing.F) {
	for _, seed := range []string{
		"herd.server=10.1.0.1:42113 herd.token=tok herd.cert_url=http://10.1.0.1:42114/cert herd.metadata=http://10.1.0.1:50061 BOOTIF=01-52-54-00-12-34-56",
		"grpc_authority=10.1.0.1:42113 worker_id=52:54:00:12:34:56 docker_registry=10.1.0.1:5000 registry_username=u registry_password=\"p w\" syslog_host=10.1.0.1",
		"herd.ca_sha256=" + strings.Repeat("ab", 32) + " herd.after=reboot herd.modules=virtio_net,,e1000 herd.debug",
		"herd.mac=zz herd.after=dance",
		"herd.syslog=[fd00::1] herd.syslog=fd00::1 herd.console=/dev/ttyS0 herd.nope herd.x=1",
		"BOOTIF=01-aa-bb herd.token=\"a\nb\"",
		"\x00herd.server=\x00",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseCmdline(line)
		again, err2 := ParseCmdline(line)
		if (err == nil) != (err2 == nil) || !reflect.DeepEqual(c, again) {
			t.Fatalf("two parses differ: %+v %v / %+v %v", c, err, again, err2)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused without saying why")
			}
			return
		}
		if c.CASHA256 != "" && len(c.CASHA256) != 64 {
			t.Fatalf("CA pin %q accepted", c.CASHA256)
		}
		if n := len(c.MAC); n != 0 && n != 6 && n != 8 && n != 20 {
			t.Fatalf("MAC of %d bytes accepted: %v", n, c.MAC)
		}
		if a := c.SyslogAddr(); a != "" {
			if _, _, err := net.SplitHostPort(a); err != nil {
				t.Fatalf("syslog address %q (from %q) does not split: %v", a, c.Syslog, err)
			}
		}
		for _, kv := range c.WorkerEnv("/run/docker.sock", "/run/herd/power") {
			if strings.ContainsAny(kv, "\x00\n") {
				t.Fatalf("worker environment entry %q holds a NUL or newline", kv)
			}
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				t.Fatalf("worker environment entry %q is no NAME=value", kv)
			}
		}
	})
}
