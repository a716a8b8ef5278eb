package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// --server-replicas N: N herd-server processes on the one PostgreSQL and
// the one state directory (docs/scaling.md, "herd-server replicas"). They
// start together: each reads or makes the state directory's CA and keys
// under its lock, so the first makes them and the others read the same.
// Each has ports of its own, so the clients hold a real list (the first
// replica first) and fail over along it; the CA they trust is the state
// directory's file, not one replica's /cert, which dies with it.

const maxServerReplicas = 3

// serverReplica is one herd-server's addresses in the namespace.
type serverReplica struct {
	name       string // its process and log name
	grpc, http string
}

// serverReplicas are the addresses of n replicas: the first on
// Tinkerbell's ports (42113, 42114), each next ten ports up.
func serverReplicas(n int) []serverReplica {
	out := make([]serverReplica, n)
	for i := range out {
		name := "herd-server"
		if i > 0 {
			name = fmt.Sprintf("herd-server-%d", i+1)
		}
		out[i] = serverReplica{name: name,
			grpc: fmt.Sprintf("%s:%d", hostIP, 42113+10*i), http: fmt.Sprintf("%s:%d", hostIP, 42114+10*i)}
	}
	return out
}

// authority is the clients' --server: every replica, comma-separated.
func authority(rs []serverReplica) string {
	addrs := make([]string, len(rs))
	for i, r := range rs {
		addrs[i] = r.grpc
	}
	return strings.Join(addrs, ",")
}

// metricsURLs are the replicas' /metrics pages.
func metricsURLs(rs []serverReplica) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = "http://" + r.http + "/metrics"
	}
	return out
}

// serverCA is where the replicas' shared CA is (the state directory's),
// for the clients that run on this host.
func (sb *sandbox) serverCA() string { return filepath.Join(sb.dir, "server", "ca.pem") }

// serverConn is how the clients reach herd-server: every replica, and
// the one replica's CA URL, or with replicas the shared CA file.
type serverConn struct {
	authority, certURL, caFile string
}

func (sb *sandbox) serverConn(rs []serverReplica) serverConn {
	if len(rs) == 1 {
		return serverConn{authority: rs[0].grpc, certURL: "http://" + rs[0].http + "/cert"}
	}
	return serverConn{authority: authority(rs), caFile: sb.serverCA()}
}

// flags are a service's flags for it.
func (c serverConn) flags() []string {
	if c.caFile != "" {
		return []string{"--server", c.authority, "--ca-file", c.caFile}
	}
	return []string{"--server", c.authority, "--cert-url", c.certURL}
}

// env is the herd CLI's environment for it.
func (c serverConn) env(token string) []string {
	if c.caFile != "" {
		return []string{"HERD_GRPC_AUTHORITY=" + c.authority, "HERD_CA_FILE=" + c.caFile, "HERD_TOKEN=" + token}
	}
	return []string{"HERD_GRPC_AUTHORITY=" + c.authority, "HERD_CERT_URL=" + c.certURL, "HERD_TOKEN=" + token}
}

// checkReplicas checks --server-replicas against the stack and the fault.
func checkReplicas(o options) error {
	n := o.serverReplicas
	if n < 1 || n > maxServerReplicas {
		return fmt.Errorf("--server-replicas %d: want 1 to %d", n, maxServerReplicas)
	}
	if n > 1 && o.stack == stackCompose {
		return fmt.Errorf("--server-replicas %d is not supported with --stack %s: the compose stack scales herd-server its own way (docker-compose up --scale herd-server=N, deploy/README.md)", n, stackCompose)
	}
	if o.fault == faultKillServer {
		if n < 2 {
			return fmt.Errorf("--fault %s needs --server-replicas 2 or more (got %d): with one replica there is none to go on with", faultKillServer, n)
		}
		if len(o.faultDuring) > n-1 {
			return fmt.Errorf("--fault %s --fault-during %s: %d kills of %d replicas would leave none; give at most %d action(s)",
				faultKillServer, strings.Join(o.faultDuring, ","), len(o.faultDuring), n, n-1)
		}
	}
	return nil
}

// workerCAName is the replicas' CA in herd-boots' /osie/, for the OSIE's
// worker (herd-boots pins it on the kernel line: herd.ca_sha256=).
const workerCAName = "herd-ca.pem"

func workerCAURL() string { return "http://" + bootsHTTP + "/osie/" + workerCAName }

// osieSettings reads, from a VM's console, the server list and the CA URL
// the OSIE's init parsed from its kernel line (its "kernel command line
// parsed" line: ... server=A,B ... cert_url=U ...); ok is false without it.
func osieSettings(console string) (server, certURL string, ok bool) {
	for _, l := range strings.Split(console, "\n") {
		if !strings.Contains(l, `msg="kernel command line parsed"`) {
			continue
		}
		for _, f := range strings.Fields(l) {
			if v, found := strings.CutPrefix(f, "server="); found {
				server = v
			} else if v, found := strings.CutPrefix(f, "cert_url="); found {
				certURL = v
			}
		}
		return server, certURL, true
	}
	return "", "", false
}

// replicasSummary prints whether the OSIE's worker was given every
// replica and the pinned CA from herd-boots; ok is whether it was.
func (sb *sandbox) replicasSummary(w io.Writer, console string) bool {
	want := authority(serverReplicas(sb.opts.serverReplicas))
	b, _ := os.ReadFile(console)
	server, certURL, seen := osieSettings(string(b))
	switch {
	case !seen:
		fmt.Fprintf(w, "replicas   the OSIE's init printed no kernel command line on the console: the worker's server list is unknown\n")
		return false
	case server != want || certURL != workerCAURL():
		fmt.Fprintf(w, "replicas   WRONG: the OSIE's worker got server=%s cert_url=%s, want server=%s cert_url=%s\n", server, certURL, want, workerCAURL())
		return false
	}
	fmt.Fprintf(w, "replicas   the OSIE's worker got every replica, server=%s, and the CA from herd-boots (%s)\n", server, certURL)
	return true
}
