// Package e2e drives a real herd-server process, on a real PostgreSQL,
// through the herd CLI, raw gRPC calls and the REST gateway.
package e2e

import (
	"os"
	"testing"

	"github.com/herd-metal/herd/pkg/servertest"
)

const adminToken = servertest.AdminToken

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, true)) }
