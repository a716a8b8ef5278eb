package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// runcBin is where build.sh puts Debian's runc.
const runcBin = "/usr/sbin/runc"

// The OSIE's container runtimes: which one runs is what build.sh put in
// the initramfs (ENGINE=runc, the default, ships no dockerd).
const (
	runtimeDocker = "docker" // containerd and dockerd, herd-worker on the Docker API
	runtimeRunc   = "runc"   // no engine: herd-worker runs runc itself
)

// RuntimeFor is the runtime of an initramfs that has dockerd or not.
func RuntimeFor(haveDockerd bool) string {
	if haveDockerd {
		return runtimeDocker
	}
	return runtimeRunc
}

// RuncWorkerEnv is what herd-worker needs besides WorkerEnv to run the
// actions with runc in the OSIE: --runtime runc, --runc-no-pivot (the root
// is the initramfs, which pivot_root cannot leave) and, as dockerd's
// --insecure-registry did for the registry boots names, HTTPS to it
// without checking its certificate, or plain HTTP.
func RuncWorkerEnv(c Config) []string {
	env := []string{"HERD_RUNTIME=" + runtimeRunc, "HERD_RUNC=" + runcBin, "HERD_RUNC_NO_PIVOT=true"}
	if c.Registry != "" {
		env = append(env, "HERD_REGISTRY_INSECURE=true")
	}
	return env
}

// runcVersion is the first line of `runc --version`, checking that runc
// and the libraries it links are there.
func runcVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, runcBin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", runcBin, err, strings.TrimSpace(string(out)))
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(first, "runc version "), nil
}
