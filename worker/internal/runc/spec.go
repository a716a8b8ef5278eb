package runc

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/herd-metal/herd/worker/internal/runner"
)

// ociVersion is the spec version runc 1.1 (Debian bookworm's) reads.
const ociVersion = "1.0.2-dev"

// defaultPath is the PATH an image that sets none gets (Docker's).
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultCaps are the capabilities of an unprivileged container (Docker's
// default set).
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// allCaps are every capability runc 1.1 knows, in the order of their
// numbers (CAP_CHOWN is 0, through CAP_CHECKPOINT_RESTORE, 40, Linux 5.9):
// a privileged container gets all those the worker itself may pass on.
var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
	"CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// Docker's masked and read-only paths of an unprivileged container.
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
		"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
	}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// hostFile is a file of the host's given to every container (a copy, so
// an action that rewrites it does not rewrite the machine's).
type hostFile struct{ Source, Destination string }

// specInput is everything a container's OCI config is made of.
type specInput struct {
	Container runner.Container
	Image     v1.Config // the image's config (Entrypoint, Cmd, Env, WorkingDir, User)
	RootFS    string    // the merged overlay directory
	User      specs.User
	HostFiles []hostFile
	// Bounding is the worker's own capability bounding set (a bit per
	// capability number): a container cannot get what it lacks, runc
	// would fail to start it (a worker inside a container).
	Bounding uint64
}

// within are the caps among names whose bit is set in bounding.
func within(names []string, bounding uint64) []string {
	var out []string
	for _, n := range names {
		if i := slices.Index(allCaps, n); i >= 0 && bounding&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// processArgs are the container's arguments as Docker merges them: the
// image's entrypoint followed by the action's command, or the image's Cmd
// when the action gives none.
func processArgs(img v1.Config, command []string) ([]string, error) {
	cmd := command
	if len(cmd) == 0 {
		cmd = img.Cmd
	}
	args := append(append([]string{}, img.Entrypoint...), cmd...)
	if len(args) == 0 {
		return nil, errors.New("no command: the action gives none and the image has neither Entrypoint nor Cmd")
	}
	return args, nil
}

// mergeEnv is the image's environment overridden, name by name, by the
// action's (Docker's rule), with PATH and HOME set when neither gives them.
func mergeEnv(image, action []string, home string) []string {
	var out []string
	at := map[string]int{}
	for _, list := range [][]string{image, action} {
		for _, kv := range list {
			name, _, _ := strings.Cut(kv, "=")
			if i, ok := at[name]; ok {
				out[i] = kv
				continue
			}
			at[name] = len(out)
			out = append(out, kv)
		}
	}
	if _, ok := at["PATH"]; !ok {
		out = append(out, defaultPath)
	}
	if _, ok := at["HOME"]; !ok {
		out = append(out, "HOME="+home)
	}
	return out
}

// bindMount turns a Docker-style bind "host:container[:ro|rw]" into a
// mount. Named volumes are not supported: the host side must be absolute.
func bindMount(bind string) (specs.Mount, error) {
	parts := strings.Split(bind, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return specs.Mount{}, fmt.Errorf("bind %q: want host-path:container-path[:ro|rw]", bind)
	}
	src, dst := parts[0], parts[1]
	if !filepath.IsAbs(src) {
		return specs.Mount{}, fmt.Errorf("bind %q: the host path must be absolute (named volumes need the docker runtime)", bind)
	}
	if !filepath.IsAbs(dst) {
		return specs.Mount{}, fmt.Errorf("bind %q: the container path must be absolute", bind)
	}
	mode := "rw"
	if len(parts) == 3 {
		for _, o := range strings.Split(parts[2], ",") {
			switch o {
			case "ro", "rw":
				mode = o
			case "z", "Z", "rprivate", "private", "rslave", "slave", "rshared", "shared", "":
				// SELinux labels and propagation: nothing to do here.
			default:
				return specs.Mount{}, fmt.Errorf("bind %q: unknown option %q", bind, o)
			}
		}
	}
	return specs.Mount{Destination: filepath.Clean(dst), Type: "bind", Source: filepath.Clean(src), Options: []string{"rbind", mode}}, nil
}

// buildSpec is the OCI runtime config of one action container: the host's
// network and host name (no network or UTS namespace, as Docker's
// --network host), its own mount, IPC and PID namespaces (no PID namespace
// with PidMode "host"), and with Privileged every capability, the host's
// /dev, a writable /sys and nothing masked.
func buildSpec(in specInput) (*specs.Spec, error) {
	c := in.Container
	args, err := processArgs(in.Image, c.Command)
	if err != nil {
		return nil, err
	}
	home := "/root"
	if in.User.UID != 0 {
		home = "/"
	}
	cwd := in.Image.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("image working directory %q is not absolute", cwd)
	}
	caps := within(defaultCaps, in.Bounding)
	if c.Privileged {
		caps = within(allCaps, in.Bounding)
	}
	s := &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			User: in.User,
			Args: args,
			Env:  mergeEnv(in.Image.Env, c.Env, home),
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
		},
		Root:        &specs.Root{Path: in.RootFS},
		Annotations: c.Labels,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.IPCNamespace}},
			Resources:  &specs.LinuxResources{},
		},
	}
	switch c.PidMode {
	case "":
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
	case "host":
	default:
		return nil, fmt.Errorf("pid mode %q: want \"\" or \"host\"", c.PidMode)
	}
	if c.Privileged {
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/dev", Type: "bind", Source: "/dev", Options: []string{"rbind", "rw"}},
			specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "rw"}},
		)
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			specs.Mount{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		)
		s.Linux.MaskedPaths = maskedPaths
		s.Linux.ReadonlyPaths = readonlyPaths
	}
	for _, f := range in.HostFiles {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: f.Destination, Type: "bind", Source: f.Source, Options: []string{"rbind", "rw"}})
	}
	for _, b := range c.Binds {
		m, err := bindMount(b)
		if err != nil {
			return nil, err
		}
		s.Mounts = append(s.Mounts, m)
	}
	return s, nil
}
