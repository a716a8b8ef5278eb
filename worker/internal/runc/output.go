package runc

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
)

// maxLineBytes cuts a line that has no newline in sight.
const maxLineBytes = 64 << 10

// maxKeptBytes bounds the output a container keeps for Logs: past it the
// oldest lines are dropped (the runner reads the lines as they come).
const maxKeptBytes = 8 << 20

type outputLine struct{ stream, text string }

// output is a container's stdout and stderr, line by line, kept from the
// start so Logs may begin before or after the container ends (as Docker's
// log does).
type output struct {
	mu      sync.Mutex
	lines   []outputLine
	dropped int // lines dropped from the front
	bytes   int
	open    int           // streams still being read
	changed chan struct{} // closed and replaced on every change
}

func newOutput(streams int) *output {
	return &output{open: streams, changed: make(chan struct{})}
}

func (o *output) add(stream, text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lines = append(o.lines, outputLine{stream, text})
	o.bytes += len(text)
	for o.bytes > maxKeptBytes && len(o.lines) > 1 {
		o.bytes -= len(o.lines[0].text)
		o.lines = o.lines[1:]
		o.dropped++
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *output) closeStream() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.open--
	close(o.changed)
	o.changed = make(chan struct{})
}

// read cuts r into lines of stream until it ends.
func (o *output) read(stream string, r io.Reader) {
	defer o.closeStream()
	br := bufio.NewReaderSize(r, maxLineBytes)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 { // a full buffer is a cut line
			o.add(stream, strings.TrimRight(string(line), "\r\n"))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// follow calls line for every line from the first kept one until both
// streams have ended, or ctx has.
func (o *output) follow(ctx context.Context, line func(stream, text string)) error {
	next := 0 // index counting dropped lines too
	for {
		o.mu.Lock()
		if next < o.dropped {
			next = o.dropped
		}
		pending := append([]outputLine(nil), o.lines[next-o.dropped:]...)
		next += len(pending)
		done, changed := o.open == 0, o.changed
		o.mu.Unlock()
		for _, l := range pending {
			line(l.stream, l.text)
		}
		if done && len(pending) == 0 {
			return nil
		}
		if len(pending) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
