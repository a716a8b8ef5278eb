package transport

import (
	"context"
	"errors"
	"net"
	"sync"
)

// memListener is an in-process net.Listener: the REST gateway reaches the
// gRPC server through it, so it needs neither a loopback port nor a
// certificate that names localhost.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr{} }

// Dial connects to the listener.
func (l *memListener) Dial(ctx context.Context, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- memConn{server}:
		return client, nil
	case <-l.closed:
		return nil, errors.New("in-process listener closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// memConn is the server side of an in-process connection: its peer is
// memAddr, which tells Peer to look for the REST client's address.
type memConn struct{ net.Conn }

func (memConn) RemoteAddr() net.Addr { return memAddr{} }
func (memConn) LocalAddr() net.Addr  { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "in-process" }
