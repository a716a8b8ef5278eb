package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// readInput reads the file at path, or stdin when path is "" or "-", up
// to limit bytes. It returns the contents and how to name their source in
// messages. what says what the input is ("hardware JSON").
func (a *app) readInput(path string, limit int, what string) ([]byte, string, error) {
	var r io.Reader
	src := path
	switch path {
	case "", "-":
		if isTerminal(a.stdin) {
			return nil, "", usagef("give the %s with --file, or pipe it on stdin", what)
		}
		r, src = a.stdin, "stdin"
	default:
		f, err := os.Open(path)
		if err != nil {
			return nil, "", err
		}
		defer f.Close()
		r = f
	}
	if r == nil {
		return nil, "", fmt.Errorf("%s: nothing to read", src)
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", src, err)
	}
	if len(b) > limit {
		return nil, "", fmt.Errorf("%s: larger than %d bytes, the most a %s may be", src, limit, what)
	}
	if strings.TrimSpace(string(b)) == "" {
		return nil, "", fmt.Errorf("%s: empty, want the %s", src, what)
	}
	return b, src, nil
}

// isTerminal reports whether r is an interactive terminal (so reading it
// would wait for typing).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// invalidError is a file that failed local validation. Several problems
// (errors.Join) are listed one per line.
type invalidError struct {
	src, what string
	err       error
}

func (e invalidError) Error() string {
	var many interface{ Unwrap() []error }
	if errors.As(e.err, &many) && len(many.Unwrap()) > 1 {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: invalid %s:", e.src, e.what)
		for _, p := range many.Unwrap() {
			for _, line := range strings.Split(p.Error(), "\n") {
				b.WriteString("\n  " + line)
			}
		}
		return b.String()
	}
	return fmt.Sprintf("%s: invalid %s: %s", e.src, e.what, e.err)
}

func (e invalidError) Unwrap() error { return e.err }

// isUUID reports whether s is a UUID in its canonical 8-4-4-4-12 form, as
// herd's ids are.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// idArg checks that the single argument is an id.
func idArg(what string) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usagef("want one %s id, got %d arguments", what, len(args))
		}
		if !isUUID(args[0]) {
			return usagef("%q is not a %s id (a UUID)", args[0], what)
		}
		return nil
	}
}

// each calls fn with every message of a server stream until it ends.
func each[T any](s grpc.ServerStreamingClient[T], fn func(*T) error) error {
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}
