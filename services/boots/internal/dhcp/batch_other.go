//go:build !linux

package dhcp

import (
	"log/slog"
	"net"
)

// serveBatched needs Linux's recvmmsg: elsewhere Serve reads packet by
// packet.
func serveBatched(*net.UDPConn, *Handler, *slog.Logger, bool) (bool, error) { return false, nil }

var batchLoops = 0
