package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// stateLockName is the lock file in the state directory.
const stateLockName = ".lock"

// lockStateDir takes the state directory's lock (flock on its lock file)
// and returns what releases it. The lock belongs to the open file: a
// server killed while holding it holds it no more. Replicas on one host
// mounting one directory share it; a directory nothing can be written to
// needs none, since no replica can make a file there either.
func lockStateDir(dir string, log *slog.Logger) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	path := filepath.Join(dir, stateLockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		log.Debug("state directory is read-only: no lock taken", "dir", dir, "error", err)
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		log.Info("waiting for the state directory's lock: another herd-server is making its files", "lock", path)
		err = flock(f, unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("state directory lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// flock retries what a signal interrupted (the Go runtime sends some).
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// writeFileAtomic writes data to a file beside path and renames it into
// place: a crash leaves the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
