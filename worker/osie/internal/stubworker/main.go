// Command stubworker stands in for herd-worker in the OSIE boot test: it
// prints what the init handed it, checks the Docker socket answers, and
// asks for a power off through the power file, as a workflow's last
// action does.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	for _, k := range []string{"HERD_SERVER", "HERD_ID", "HERD_CERT_URL", "HERD_METADATA_URL", "HERD_REGISTRY", "DOCKER_HOST", "HERD_POWER_FILE"} {
		fmt.Printf("stubworker: %s=%s\n", k, os.Getenv(k))
	}
	fmt.Printf("stubworker: token set: %v\n", os.Getenv("HERD_TOKEN") != "")
	sock := strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := hc.Get("http://docker/_ping")
	if err != nil {
		fmt.Printf("stubworker: docker ping failed: %v\n", err)
		os.Exit(1)
	}
	resp.Body.Close()
	fmt.Printf("stubworker: docker ping %s\n", resp.Status)
	if err := os.WriteFile(os.Getenv("HERD_POWER_FILE"), []byte("poweroff\n"), 0o644); err != nil {
		fmt.Printf("stubworker: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("stubworker: workflow done, asked for a power off")
}
