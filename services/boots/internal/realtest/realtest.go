// Package realtest is for tests that use real parts of the machine
// (commands, root, network namespaces): missing parts skip the test on a
// developer's machine and fail it under CI=true, never skip there.
package realtest

import (
	"os"
	"os/exec"
	"testing"
)

// Missing fails the test under CI=true and skips it otherwise.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (CI=true: a missing real part fails; run scripts/deps.sh as root)", what)
	}
	t.Skipf("%s is missing (install services/boots/deps.txt)", what)
}

// Command returns the path of the command name, or ends the test by Missing.
func Command(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "command "+name)
	}
	return p
}

// File ends the test by Missing when path does not exist.
func File(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, path)
	}
}

// Root ends the test by Missing unless it runs as root.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (for network namespaces)")
	}
}
