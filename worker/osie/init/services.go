package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Where the OSIE's engines live (the paths Debian's docker.io and
// containerd packages install to, copied into the initramfs by build.sh).
const (
	containerdBin  = "/usr/bin/containerd"
	containerdSock = "/run/containerd/containerd.sock"
	dockerdBin     = "/usr/sbin/dockerd"
	dockerSock     = "/run/docker.sock"
	powerFile      = "/run/herd/power"
	childPath      = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
)

// ContainerdArgs are containerd's arguments (its config, written by
// build.sh, turns off the plugins the OSIE has no use for).
func ContainerdArgs(debug bool) []string {
	args := []string{"--config", "/etc/containerd/config.toml", "--address", containerdSock,
		"--root", "/var/lib/containerd", "--state", "/run/containerd"}
	if debug {
		args = append(args, "--log-level", "debug")
	}
	return args
}

// DockerdArgs are dockerd's arguments. Actions run with the host's network
// (the OSIE has no iptables, so no bridge); the registry boots names is
// trusted over plain HTTP as well as HTTPS.
func DockerdArgs(c Config) []string {
	args := []string{
		"--containerd=" + containerdSock,
		"--host=unix://" + dockerSock,
		"--data-root=/var/lib/docker",
		"--exec-root=/run/docker",
		"--pidfile=/run/docker.pid",
		"--storage-driver=overlay2",
		"--iptables=false", "--ip6tables=false", "--ip-masq=false",
		"--bridge=none",
	}
	if c.Registry != "" {
		args = append(args, "--insecure-registry="+c.Registry)
	}
	if c.Debug {
		args = append(args, "--debug")
	}
	return args
}

// DockerdEnv is dockerd's environment. DOCKER_RAMDISK makes runc use
// MS_MOVE+chroot instead of pivot_root, which fails on an initramfs root.
func DockerdEnv() []string {
	return []string{childPath, "HOME=/root", "DOCKER_RAMDISK=true"}
}

// startChild starts a program whose output goes to the log.
func startChild(log *slog.Logger, name, bin string, args, env []string) (*exec.Cmd, error) {
	level := slog.LevelInfo
	if name == "containerd" || name == "dockerd" {
		level = slog.LevelDebug // their warnings and errors still show: see ChildLevel
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	w := &lineWriter{log: log.With("proc", name), level: level}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	log.Info("started", "proc", name, "pid", cmd.Process.Pid)
	return cmd, nil
}

// waitSocket waits for a unix socket to accept connections.
func waitSocket(ctx context.Context, path string, exited <-chan struct{}) error {
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not come up: %w", path, ctx.Err())
		case <-exited:
			return fmt.Errorf("its process exited before %s came up", path)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DockerInfo is the part of GET /info the init logs.
type DockerInfo struct {
	ServerVersion   string
	Driver          string
	CgroupVersion   string
	CgroupDriver    string
	KernelVersion   string
	NCPU            int
	MemTotal        int64
	Containers      int
	Images          int
	OperatingSystem string
}

// dockerInfo asks the engine's API for /info over its socket.
func dockerInfo(ctx context.Context, sock string) (DockerInfo, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/info", nil)
	if err != nil {
		return DockerInfo{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return DockerInfo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return DockerInfo{}, fmt.Errorf("GET /info: %s", resp.Status)
	}
	var info DockerInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return DockerInfo{}, fmt.Errorf("GET /info: %w", err)
	}
	return info, nil
}

// stopChild sends SIGTERM and waits up to grace, then kills.
func stopChild(log *slog.Logger, name string, cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		log.Warn("did not stop in time: killing", "proc", name)
		_ = cmd.Process.Kill()
		<-done
	}
}

// waitDone returns a channel closed when cmd has exited.
func waitDone(cmd *exec.Cmd, result *error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		*result = cmd.Wait()
		close(done)
	}()
	return done
}

// fileExists is a thin wrapper for the worker binary check.
func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
