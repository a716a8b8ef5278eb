// Package realtest is for tests that use real parts of the machine
// (ipmi_sim, ipmitool, QEMU): a missing part skips the test on a
// developer's machine and fails it under CI=true, never skips there.
package realtest

import (
	"os"
	"os/exec"
	"testing"
)

// Command returns the path of the command name; when it is missing the
// test fails under CI=true and is skipped otherwise.
func Command(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("command %s is missing (CI=true: a missing real part fails; run scripts/deps.sh as root)", name)
		}
		t.Skipf("command %s is missing (install services/bmc/deps.txt)", name)
	}
	return p
}
