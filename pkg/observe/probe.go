package observe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// ProbeTimeout bounds one Probe: a container engine's health check gives up
// on its own after its timeout, and a hung probe should say why first.
const ProbeTimeout = 3 * time.Second

// ProbeURL is the /healthz URL of a service that listens on listenAddr
// (its own --http-addr style flag, "host:port"). A wildcard or empty host
// (":80", "0.0.0.0:80", "[::]:80") is probed on 127.0.0.1: a Go listener
// on one of them takes IPv4 loopback connections too.
func ProbeURL(listenAddr string) (string, error) {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return "", fmt.Errorf("health probe: listen address %q: %w", listenAddr, err)
	}
	if port == "" {
		return "", fmt.Errorf("health probe: listen address %q has no port", listenAddr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}

// Probe asks the service listening on listenAddr for its /healthz (see
// Mount) and returns nil when it answers 200 OK (status ok or degraded),
// else an error that says what it got: this is the `healthcheck` command
// of each service binary, which container images without a shell or curl
// run as their health check.
func Probe(ctx context.Context, listenAddr string) error {
	url, err := ProbeURL(listenAddr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health probe: %w", err)
	}
	// No proxy from the environment: the service is on this host.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health probe: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("health probe: GET %s: %s: %s", url, res.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
