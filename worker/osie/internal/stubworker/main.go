// Command stubworker stands in for herd-worker in the OSIE boot test: it
// prints what the init handed it, checks that the container runtime works
// (with runc, the OSIE's default: pulls stubImage from the registry and
// runs it as herd-worker would; with docker: the engine's socket answers), and asks for a power off through the power file, as a
// workflow's last action does.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/herd-metal/herd/worker/internal/docker"
	"github.com/herd-metal/herd/worker/internal/runc"
	"github.com/herd-metal/herd/worker/internal/runner"
)

func main() {
	for _, k := range []string{"HERD_SERVER", "HERD_ID", "HERD_CERT_URL", "HERD_METADATA_URL", "HERD_REGISTRY", "DOCKER_HOST", "HERD_POWER_FILE",
		"HERD_RUNTIME", "HERD_RUNC_NO_PIVOT", "HERD_REGISTRY_INSECURE"} {
		fmt.Printf("stubworker: %s=%s\n", k, os.Getenv(k))
	}
	fmt.Printf("stubworker: token set: %v\n", os.Getenv("HERD_TOKEN") != "")
	check := dockerPing
	if os.Getenv("HERD_RUNTIME") == "runc" {
		check = runAction
	}
	if err := check(); err != nil {
		fmt.Printf("stubworker: %v\n", err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Getenv("HERD_POWER_FILE"), []byte("poweroff\n"), 0o644); err != nil {
		fmt.Printf("stubworker: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("stubworker: workflow done, asked for a power off")
}

func dockerPing() error {
	sock := strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := hc.Get("http://docker/_ping")
	if err != nil {
		return fmt.Errorf("docker ping failed: %w", err)
	}
	resp.Body.Close()
	fmt.Printf("stubworker: docker ping %s\n", resp.Status)
	return nil
}

// The image the boot test serves (runctest's probe image) and what it runs.
const stubImage = "herd-test/probe:v1"

var stubCommand = []string{"stat", "/dev/loop-control", "/etc/kept", "/etc/removed"}

// runAction pulls stubImage and runs it privileged, as herd-worker's runc
// runtime does with the settings the init gave.
func runAction() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	r, err := runc.New(runc.Config{Runc: os.Getenv("HERD_RUNC"), NoPivot: os.Getenv("HERD_RUNC_NO_PIVOT") == "true",
		Registry: os.Getenv("HERD_REGISTRY"), Insecure: os.Getenv("HERD_REGISTRY_INSECURE") == "true", PullPolicy: docker.PullAlways}, log)
	if err != nil {
		return err
	}
	img := stubImage
	if err := r.Pull(ctx, img); err != nil {
		return err
	}
	id, err := r.Create(ctx, runner.Container{Name: "stub-action", Image: img, Command: stubCommand,
		Privileged: true, Binds: []string{"/run/herd:/run/herd"}})
	if err != nil {
		return err
	}
	defer r.Remove(context.WithoutCancel(ctx), id)
	if err := r.Start(ctx, id); err != nil {
		return err
	}
	code, err := r.Wait(ctx, id)
	if err != nil {
		return err
	}
	err = r.Logs(ctx, id, func(stream, line string) { fmt.Printf("stubworker: action %s: %s\n", stream, line) })
	fmt.Printf("stubworker: action exit %d\n", code)
	return err
}
