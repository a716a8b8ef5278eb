// Package version carries the build's version, set at link time:
// -ldflags "-X github.com/herd-metal/herd/pkg/version.Version=v1.2.3".
package version

// Version and Commit are link-time constants, never written at run time.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is "VERSION (COMMIT)".
func String() string { return Version + " (" + Commit + ")" }
