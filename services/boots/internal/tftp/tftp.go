// Package tftp serves the iPXE binaries to PXE ROMs over TFTP (RFC 1350,
// read only, octet mode) with blksize (RFC 2348), tsize (RFC 2349) and
// windowsize (RFC 7440) negotiated, from one flat directory. The same Dir
// backs the HTTP /ipxe/ route for HTTP boot.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

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

	// Limits; New sets the defaults, tests may lower them.
	limits       limits
	timeout      time.Duration
	retries      int
	maxTransfers int
	cache        fileCache
}

// New returns a server for dir; reg may be nil.
func New(dir *Dir, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{dir: dir, log: log,
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_boots_tftp_transfers_total",
			Help: "TFTP read requests by outcome (ok, refused, failed)."}, []string{"outcome"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_boots_tftp_bytes_total",
			Help: "Bytes sent over TFTP."}),
		// A window of 64 blocks or 128 KiB at most: what a default Linux
		// socket receive buffer (208 KiB) holds without drops.
		limits:  limits{blksize: maxBlksize, windowsize: 64, windowBytes: 128 << 10},
		timeout: time.Second, retries: 5,
		// Each transfer holds a socket and one block: a flood of requests
		// is answered "busy" past this many.
		maxTransfers: 1024,
		// iPXE binaries are 0.1 to 1 MiB.
		cache: fileCache{maxFile: 16 << 20, maxTotal: 64 << 20},
	}
	if reg != nil {
		reg.MustRegister(s.transfers, s.bytes)
	}
	return s
}

// Serve serves read requests on conn until ctx ends, then waits for the
// transfers under way to stop. Writes are refused.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return fmt.Errorf("tftp: %T is not a UDP socket", conn)
	}
	pktinfo := enablePacketInfo(uc)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Now()) })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, s.maxTransfers)
	buf := make([]byte, 2048) // RFC 2347 keeps requests within 512 bytes
	oob := make([]byte, 128)
	for {
		n, oobn, _, peer, err := uc.ReadMsgUDP(buf, oob)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("tftp: %w", err)
		}
		var local net.IP
		ifindex := 0
		if pktinfo {
			local, ifindex, _ = packetInfo(oob[:oobn])
		} else if la, ok := uc.LocalAddr().(*net.UDPAddr); ok {
			local = la.IP
		}
		if local.Equal(net.IPv4bcast) || local.IsUnspecified() {
			local = nil // a broadcast request is answered from the default address
		}
		switch opcode(buf[:n]) {
		case opRRQ:
		case opWRQ:
			uc.WriteToUDP(errorPacket(errCodeAccess, "read-only server: write requests are refused"), peer)
			s.transfers.WithLabelValues("refused").Inc()
			continue
		default:
			continue // stray packets on the request port are not ours to answer
		}
		select {
		case slots <- struct{}{}:
		default:
			uc.WriteToUDP(errorPacket(errCodeUndefined, "server busy: too many transfers, retry later"), peer)
			s.transfers.WithLabelValues("refused").Inc()
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.serveRequest(ctx, pkt, local, ifindex, peer)
		}()
	}
}

// serveRequest answers one read request from a new socket (the transfer's
// TID) bound to the address the request was sent to.
func (s *Server) serveRequest(ctx context.Context, pkt []byte, local net.IP, ifindex int, peer *net.UDPAddr) {
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: local}, peer)
	if err != nil {
		s.transfers.WithLabelValues("failed").Inc()
		s.log.Warn("tftp: no socket for transfer", "peer", peer.String(), "err", err)
		return
	}
	defer conn.Close()
	refuse := func(code uint16, name string, err error) {
		conn.Write(errorPacket(code, err.Error()))
		s.transfers.WithLabelValues("refused").Inc()
		s.log.Info("tftp: refused", "file", name, "peer", peer.String(), "err", err)
	}
	req, err := parseRequest(pkt)
	if err != nil {
		refuse(errCodeIllegal, "", err)
		return
	}
	if req.mode != "octet" {
		refuse(errCodeIllegal, req.filename, fmt.Errorf("mode %q not served: boot files are binary, ask octet", req.mode))
		return
	}
	f, size, err := s.dir.Open(req.filename)
	if err != nil {
		refuse(errCodeNotFound, req.filename, err)
		return
	}
	defer f.Close()
	lim := s.limits
	if ifindex > 0 {
		if intf, err := net.InterfaceByIndex(ifindex); err == nil && intf.MTU > 28 {
			lim.blksize = min(lim.blksize, intf.MTU-28) // IPv4 + UDP headers: no fragments
		}
	}
	g, err := negotiate(req.options, size, lim)
	if err != nil {
		refuse(errCodeOptionsRefused, req.filename, err)
		return
	}
	t := transfer{conn: conn, file: s.cache.reader(f), size: size, grant: g, timeout: s.timeout, retries: s.retries}
	n, err := t.run(ctx)
	s.bytes.Add(float64(n))
	if err != nil {
		if !errors.Is(err, errPeer) && ctx.Err() == nil {
			conn.Write(errorPacket(errCodeUndefined, err.Error()))
		}
		s.transfers.WithLabelValues("failed").Inc()
		s.log.Warn("tftp: transfer failed", "file", req.filename, "peer", peer.String(), "bytes", n, "err", err)
		return
	}
	s.transfers.WithLabelValues("ok").Inc()
	s.log.Info("tftp: sent", "file", req.filename, "peer", peer.String(), "bytes", n, "blksize", g.blksize, "windowsize", g.windowsize)
}
