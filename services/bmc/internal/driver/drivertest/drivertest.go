// Package drivertest holds what the drivers' tests check alike.
package drivertest

import (
	"errors"
	"strings"
	"testing"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
)

// WantErr checks that err is a driver error of cause naming the BMC, with
// each of words in its text and not the BMC's password.
func WantErr(t *testing.T, err error, cause error, b driver.BMC, words ...string) {
	t.Helper()
	var de *driver.Error
	if !errors.As(err, &de) || !errors.Is(err, cause) {
		t.Fatalf("err = %v (%T), want a driver.Error of %v", err, err, cause)
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	if !strings.Contains(msg, b.String()) {
		t.Fatalf("error %q does not name the BMC %q", msg, b.String())
	}
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q lacks %q", msg, w)
		}
	}
	if b.Password != "" && strings.Contains(msg, b.Password) {
		t.Fatalf("error %q holds the password", msg)
	}
}
