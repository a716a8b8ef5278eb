package main

import (
	"context"
	"errors"
	"io"
)

// The action runs as three stages, each its own goroutine, so the
// download, the decompression and the disk writes overlap as they do in
// `curl | zstd -d | dd`: download (and SHA-256) → decompress → write.
// Stages hand each other whole buffers through a stage: a bounded set of
// reusable aligned buffers, so memory stays fixed and the disk gets large
// aligned writes straight from the buffer the bytes were put in.

// chunkSize is the size of one buffer, and so of one disk write (as dd's
// bs=4M).
const chunkSize = 4 << 20

// stage is a bounded queue of filled buffers and the pool they go back to.
type stage struct {
	free chan []byte
	full chan []byte
	err  error // why the producer stopped, set before full is closed
}

func newStage(buffers int) *stage {
	s := &stage{free: make(chan []byte, buffers), full: make(chan []byte, buffers)}
	for range buffers {
		s.free <- alignedBuffer(chunkSize)
	}
	return s
}

// fill reads r into the stage's buffers until r ends, calling seen with
// each filled part; every buffer but the last is filled whole. It closes
// full at the end; s.err says why when r failed.
func (s *stage) fill(ctx context.Context, r io.Reader, seen func([]byte)) {
	defer close(s.full)
	for {
		var b []byte
		select {
		case b = <-s.free:
		case <-ctx.Done():
			s.err = ctx.Err()
			return
		}
		n, err := readFull(r, b)
		if n > 0 {
			if seen != nil {
				seen(b[:n])
			}
			select {
			case s.full <- b[:n]:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				s.err = err
			}
			return
		}
	}
}

// readFull is io.ReadFull that keeps r's own error: a body that breaks
// off (io.ErrUnexpectedEOF) must not pass for the end of the image.
func readFull(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// downloadError marks a failure of the download seen by a later stage.
type downloadError struct{ err error }

func (e downloadError) Error() string { return "download: " + e.err.Error() }
func (e downloadError) Unwrap() error { return e.err }

// stageReader reads a stage's buffers as a stream (the decompressor's
// input), giving each buffer back once it is consumed.
type stageReader struct {
	s   *stage
	buf []byte // the buffer being read, to give back
	cur []byte // its unread part
}

// next makes cur non-empty, or returns why it cannot.
func (r *stageReader) next() error {
	for len(r.cur) == 0 {
		if r.buf != nil {
			r.s.free <- r.buf[:cap(r.buf)]
			r.buf = nil
		}
		b, ok := <-r.s.full
		if !ok {
			if r.s.err != nil {
				return downloadError{r.s.err}
			}
			return io.EOF
		}
		r.buf, r.cur = b, b
	}
	return nil
}

func (r *stageReader) Read(p []byte) (int, error) {
	if err := r.next(); err != nil {
		return 0, err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// ReadByte spares the flate decoder a bufio.Reader (and a copy) of its own.
func (r *stageReader) ReadByte() (byte, error) {
	if err := r.next(); err != nil {
		return 0, err
	}
	c := r.cur[0]
	r.cur = r.cur[1:]
	return c, nil
}

// peek returns up to n of the next bytes without consuming them; fewer
// only when the stream is shorter.
func (r *stageReader) peek(n int) ([]byte, error) {
	if err := r.next(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return r.cur[:min(n, len(r.cur))], nil
}
