package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestWriteFile(t *testing.T) {
	root := t.TempDir()
	c, err := configFrom(lookup(map[string]string{"DEST_DISK": "/dev/x", "FS_TYPE": "ext4", "DEST_PATH": "/etc/netplan/config.yaml",
		"CONTENTS": "network: {}\n", "MODE": "0600", "DIRMODE": "0750", "UID": "1000", "GID": "1001"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(root, c); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(root, "etc/netplan/config.yaml")
	b, err := os.ReadFile(name)
	if err != nil || string(b) != "network: {}\n" {
		t.Fatalf("file %q (%v)", b, err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{name, 0o600}, {filepath.Join(root, "etc"), 0o750 | os.ModeDir}, {filepath.Join(root, "etc/netplan"), 0o750 | os.ModeDir}} {
		st, _ := os.Stat(f.path)
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode() != f.mode || sys.Uid != 1000 || sys.Gid != 1001 {
			t.Errorf("%s: mode %v owner %d:%d", f.path, st.Mode(), sys.Uid, sys.Gid)
		}
	}
	// An existing directory keeps its mode.
	os.Chmod(filepath.Join(root, "etc"), 0o755)
	c.dest = "/etc/hostname"
	if err := writeFile(root, c); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(root, "etc")); st.Mode().Perm() != 0o755 {
		t.Errorf("existing directory changed to %v", st.Mode())
	}
}

func TestConfig(t *testing.T) {
	base := func(extra map[string]string) map[string]string {
		m := map[string]string{"DEST_DISK": "/dev/sda1", "FS_TYPE": "ext4", "DEST_PATH": "/etc/hostname"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		env  map[string]string
		want string // "" = accepted
	}{
		{base(map[string]string{"CONTENTS": ""}), ""},
		{base(map[string]string{"CONTENTS_URL": "http://m/user-data"}), ""},
		{base(nil), "CONTENTS or CONTENTS_URL"},
		{base(map[string]string{"CONTENTS": "x", "CONTENTS_URL": "http://m"}), "both set"},
		{base(map[string]string{"CONTENTS": "x", "DEST_PATH": "etc/x"}), "absolute"},
		{base(map[string]string{"CONTENTS": "x", "DEST_PATH": "/etc/../../x"}), "without .."},
		{base(map[string]string{"CONTENTS": "x", "MODE": "rw"}), "octal"},
		{base(map[string]string{"CONTENTS": "x", "UID": "-1"}), "UID"},
		{map[string]string{"CONTENTS": "x"}, "must be set"},
	} {
		_, err := configFrom(lookup(tc.env))
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: err = %v, want %q", tc.env, err, tc.want)
		}
	}
}

// TestMountAndWrite runs the whole action on an ext4 filesystem in a loop
// device, with the contents from an HTTP server standing for metadata.
func TestMountAndWrite(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing (e2fsprogs, mount): %v", tool, err)
			}
			t.Skipf("%s missing: %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("mounting needs root")
		}
		t.Skip("mounting needs root")
	}
	img := filepath.Join(t.TempDir(), "part.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 8<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("#cloud-config\nhostname: node-1\n"))
	}))
	defer srv.Close()
	c, err := configFrom(lookup(map[string]string{"DEST_DISK": dev, "FS_TYPE": "ext4", "DEST_PATH": "/var/lib/cloud/seed/nocloud/user-data",
		"CONTENTS_URL": srv.URL + "/2009-04-04/user-data", "MODE": "0600"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if err := syscall.Mount(dev, mnt, "ext4", syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(mnt, 0)
	st, err := os.Stat(filepath.Join(mnt, "var/lib/cloud/seed/nocloud/user-data"))
	b, _ := os.ReadFile(filepath.Join(mnt, "var/lib/cloud/seed/nocloud/user-data"))
	if err != nil || string(b) != "#cloud-config\nhostname: node-1\n" || st.Mode().Perm() != 0o600 {
		t.Errorf("written file %q %v (%v)", b, st, err)
	}
}
