package transport

import (
	"context"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenTCP binds addr. With reusePort, SO_REUSEPORT is set before the
// bind, so several herd-server processes on one host (replicas on the
// host's network) share the port and the kernel spreads new connections
// over them; when one exits, the connections that follow go to the others.
// Linux lets only sockets of the same user join a port this way.
func listenTCP(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = setReusePort
	}
	return lc.Listen(ctx, "tcp", addr)
}

func setReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// inUseHint is what a bind error adds when the port is taken: a replica
// beside another needs --reuse-port, in both.
func inUseHint(err error, reusePort bool) string {
	switch {
	case !errors.Is(err, syscall.EADDRINUSE):
		return ""
	case reusePort:
		return " (held by a process of another user, or one bound without SO_REUSEPORT)"
	default:
		return " (replicas on one host: --reuse-port on each)"
	}
}
