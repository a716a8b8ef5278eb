package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment O_DIRECT asks of buffer addresses, file
// offsets and lengths: 4096 covers disks with 512- and 4096-byte logical
// sectors alike.
const directAlign = 4096

// alignedBuffer returns size bytes whose address is a multiple of
// directAlign (the Go heap only promises 8).
func alignedBuffer(size int) []byte {
	b := make([]byte, size+directAlign)
	off := 0
	if rem := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); rem != 0 {
		off = directAlign - rem
	}
	return b[off : off+size : off+size]
}

// disk is the target being written: a block device or a plain file,
// opened with O_DIRECT when it allows that (the page cache would only
// hold a second copy of an image nobody reads back), written in order.
type disk struct {
	f        *os.File
	name     string
	direct   bool  // O_DIRECT is on
	capacity int64 // bytes a block device holds; 0: a plain file, no limit
	off      int64 // bytes written so far
}

// openDisk opens name for writing. A plain file is created when missing
// and emptied, so a shorter image leaves nothing of the old contents.
func openDisk(name string, wantDirect bool) (*disk, error) {
	d := &disk{name: name}
	flags := os.O_WRONLY | os.O_CREATE
	var err error
	if wantDirect {
		d.f, err = os.OpenFile(name, flags|unix.O_DIRECT, 0o644)
		// EINVAL: the filesystem (tmpfs, some FUSE) has no O_DIRECT.
		d.direct = err == nil
		if err != nil && !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("DEST_DISK: %w", err)
		}
	}
	if d.f == nil {
		if d.f, err = os.OpenFile(name, flags, 0o644); err != nil {
			return nil, fmt.Errorf("DEST_DISK: %w", err)
		}
	}
	st, err := d.f.Stat()
	if err != nil {
		d.f.Close()
		return nil, fmt.Errorf("DEST_DISK: %w", err)
	}
	switch {
	case st.Mode().IsRegular():
		if err := d.f.Truncate(0); err != nil {
			d.f.Close()
			return nil, fmt.Errorf("DEST_DISK: %w", err)
		}
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		// A block device's size is where its end is.
		if d.capacity, err = d.f.Seek(0, io.SeekEnd); err != nil {
			d.f.Close()
			return nil, fmt.Errorf("DEST_DISK %s: reading its size: %w", name, err)
		}
	}
	return d, nil
}

// tooSmall is the error for an image that does not fit on the disk.
func (d *disk) tooSmall(need int64) error {
	return fmt.Errorf("the image is larger than DEST_DISK %s: it holds %d bytes, the image has at least %d", d.name, d.capacity, need)
}

// write writes p at the current offset. Every p but the last must be a
// multiple of directAlign long, and aligned in memory (alignedBuffer).
func (d *disk) write(p []byte) error {
	if d.capacity > 0 && d.off+int64(len(p)) > d.capacity {
		return d.tooSmall(d.off + int64(len(p)))
	}
	if d.direct && len(p)%directAlign != 0 {
		// The unaligned tail of the image: its aligned part still goes
		// direct, the rest through the page cache (Sync flushes it).
		head := len(p) - len(p)%directAlign
		if err := d.pwrite(p[:head]); err != nil {
			return err
		}
		p = p[head:]
		if err := d.directOff(); err != nil {
			return err
		}
	}
	return d.pwrite(p)
}

func (d *disk) pwrite(p []byte) error {
	for len(p) > 0 {
		n, err := d.f.WriteAt(p, d.off)
		d.off += int64(n)
		p = p[n:]
		if err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return d.tooSmall(d.off + int64(len(p)))
			}
			return err
		}
	}
	return nil
}

func (d *disk) directOff() error {
	fl, err := unix.FcntlInt(d.f.Fd(), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(d.f.Fd(), unix.F_SETFL, fl&^unix.O_DIRECT)
	}
	if err != nil {
		return fmt.Errorf("switching O_DIRECT off for the image's tail: %w", err)
	}
	d.direct = false
	return nil
}
