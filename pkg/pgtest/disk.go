package pgtest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Disk is the small file system under a DiskCluster's data directory,
// which the test fills to the last byte and frees again.
type Disk struct {
	t      testing.TB
	dir    string // the mount point: the cluster's data directory
	filler string // the file Fill writes
}

// NewDiskCluster is NewCluster with its data directory (not its WAL, which
// goes to the temporary directory beside it) on a tmpfs of size bytes of
// its own, so a test can fill the database's disk (Disk.Fill) and free it
// again (Disk.Free). The tmpfs is mounted under the cluster's temporary
// directory and unmounted, by that path, once the server has exited, also
// when the test fails. It needs root (the mount); without it the test is
// skipped, or failed under CI=true.
func NewDiskCluster(t testing.TB, size int64) (*Cluster, *Disk) {
	t.Helper()
	if os.Geteuid() != 0 {
		if skip(true, os.Getenv("CI")) {
			t.Skip("pgtest: mounting a tmpfs for the data directory needs root")
		}
		t.Fatal("pgtest: mounting a tmpfs for the data directory needs root")
	}
	d := &Disk{t: t}
	pc := newCluster(t, func(data string, cred *syscall.Credential) (func() error, error) {
		opts := "size=" + strconv.FormatInt(size, 10) + ",mode=0700"
		if cred != nil {
			opts += fmt.Sprintf(",uid=%d,gid=%d", cred.Uid, cred.Gid)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "herd-pgtest-disk", data).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("mount a tmpfs on %s: %w: %s", data, err, out)
		}
		d.dir, d.filler = data, filepath.Join(data, "filler")
		return func() error {
			if out, err := exec.Command("umount", data).CombinedOutput(); err != nil {
				return fmt.Errorf("umount %s: %w: %s", data, err, out)
			}
			return nil
		}, nil
	})
	return pc, d
}

// Fill writes a file into the data directory's file system until the
// file system refuses a byte more (ENOSPC), and returns how many bytes
// it wrote.
func (d *Disk) Fill() int64 {
	d.t.Helper()
	f, err := os.OpenFile(d.filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatalf("pgtest: fill %s: %v", d.dir, err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var n int64
	// Smaller writes after the first refusal take the last pages too.
	for len(chunk) > 0 {
		w, err := f.Write(chunk)
		n += int64(w)
		switch {
		case errors.Is(err, syscall.ENOSPC):
			chunk = chunk[:len(chunk)/2]
		case err != nil && !errors.Is(err, io.ErrShortWrite):
			d.t.Fatalf("pgtest: fill %s: %v", d.dir, err)
		}
	}
	return n
}

// Free deletes what Fill wrote.
func (d *Disk) Free() {
	d.t.Helper()
	if err := os.Remove(d.filler); err != nil {
		d.t.Fatalf("pgtest: free %s: %v", d.dir, err)
	}
}

// Available is the space left on the data directory's file system.
func (d *Disk) Available() int64 {
	d.t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.dir, &st); err != nil {
		d.t.Fatalf("pgtest: statfs %s: %v", d.dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
