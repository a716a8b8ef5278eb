// Package tftp serves the iPXE binaries to PXE ROMs over TFTP (read only,
// blksize and tsize negotiated by github.com/pin/tftp/v3), from one flat
// directory. The same Dir backs the HTTP /ipxe/ route for HTTP boot.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// aliases are names firmware is told that a distribution may ship under
// another name: Debian's ipxe package has snponly.efi, not snp.efi.
var aliases = map[string]string{"snp.efi": "snponly.efi"}

// Dir is a flat directory of boot files. Only plain names are served (no
// separators, no leading dot), so no request reaches outside it; symlinks
// placed in it are the operator's choice and are followed (Debian's
// /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi).
type Dir struct {
	name string
}

// OpenDir checks that dir is a directory.
func OpenDir(dir string) (*Dir, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("boot files directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("boot files directory %s: not a directory", dir)
	}
	return &Dir{name: dir}, nil
}

// Close is a no-op kept for symmetry with OpenDir.
func (d *Dir) Close() error { return nil }

func (d *Dir) open(name string) (*os.File, error) {
	return os.Open(filepath.Join(d.name, name))
}

// ErrRefused is returned for names that are not a plain file of the
// directory (traversal attempts, subdirectories, unknown files).
var ErrRefused = errors.New("no such boot file")

// Open opens the boot file name ("/ipxe.efi" and "ipxe.efi" alike) and
// returns it with its size.
func (d *Dir) Open(name string) (*os.File, int64, error) {
	name = strings.TrimLeft(name, "/")
	if name == "" || strings.ContainsAny(name, "/\\\x00") || name != path.Clean(name) || strings.HasPrefix(name, ".") {
		return nil, 0, fmt.Errorf("%q: %w", name, ErrRefused)
	}
	f, err := d.open(name)
	if errors.Is(err, fs.ErrNotExist) && aliases[name] != "" {
		f, err = d.open(aliases[name])
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%q: %w", name, ErrRefused)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%q: %w", name, ErrRefused)
	}
	return f, st.Size(), nil
}

// Server is the TFTP server.
type Server struct {
	dir       *Dir
	log       *slog.Logger
	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
}

// New returns a server for dir; reg may be nil.
func New(dir *Dir, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{dir: dir, log: log,
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_boots_tftp_transfers_total",
			Help: "TFTP read requests by outcome (ok, refused, failed)."}, []string{"outcome"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_boots_tftp_bytes_total",
			Help: "Bytes sent over TFTP."}),
	}
	if reg != nil {
		reg.MustRegister(s.transfers, s.bytes)
	}
	return s
}

func (s *Server) read(name string, rf io.ReaderFrom) error {
	peer := ""
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		a := ot.RemoteAddr()
		peer = a.String()
	}
	f, size, err := s.dir.Open(name)
	if err != nil {
		s.transfers.WithLabelValues("refused").Inc()
		s.log.Info("tftp: refused", "file", name, "peer", peer)
		return err
	}
	defer f.Close()
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(size) // tsize (RFC 2349)
	}
	n, err := rf.ReadFrom(f)
	s.bytes.Add(float64(n))
	if err != nil {
		s.transfers.WithLabelValues("failed").Inc()
		s.log.Warn("tftp: transfer failed", "file", name, "peer", peer, "bytes", n, "err", err)
		return err
	}
	s.transfers.WithLabelValues("ok").Inc()
	s.log.Info("tftp: sent", "file", name, "peer", peer, "bytes", n)
	return nil
}

// Serve serves read requests on conn until ctx ends. Writes are refused.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	srv := tftp.NewServer(s.read, nil)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			srv.Shutdown()
		case <-done:
		}
	}()
	err := srv.Serve(conn)
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	return nil
}
