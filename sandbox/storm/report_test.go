//go:build bench

package storm

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// writeReport is the bench-storm section.
// limits are the TCP copy's before the first storm and after the last.
// tcpMem is the kernel's tcp_mem (pages).
func writeReport(files [3]served, limits [2]linkLimit, rounds []round, pids map[string]int, tcpMem [3]int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## bench-storm\n\n`make bench-storm STORM_MACHINES=%s`, %s, %d CPUs, Go %s. "+
		"A boot storm through the whole path: N simulated machines, goroutines of one Go process each with its own MAC and its own address "+
		"(10.30.0.0/17, on hc0 of a network namespace, behind a relay router 10.30.255.253), are switched on at once and each walks: "+
		"DHCP DORA relayed (giaddr %s, one UDP socket on port 67 for all, iPXE's options: the user class iPXE gets the auto.ipxe URL as boot file; iPXE's retransmissions: DISCOVER at 0, 1, 3 and 7 s, given up at 15 s, "+
		"REQUEST at 0, 0.25, 0.75, 1.75, 3.75 and 7.75 s, given up at 15.75 s; replies of another type, such as a second OFFER after a resent DISCOVER, ignored) "+
		"to herd-boots in reservation mode in a second namespace (%s on hb0, one veth between the two) → GET auto.ipxe → the machine script it chains to, "+
		"its ${...} expanded as iPXE does → the kernel and initramfs named in the script's kernel and initrd lines, and its 2 boot events → "+
		"the worker's GetWorkflowContexts, GetWorkflowActions and ReportActionStatus (RUNNING, SUCCESS) for the %d actions of its workflow, "+
		"over gRPC/TLS with the herd.token credential from the script's kernel line; the third action downloads the OS image named in its IMG_URL "+
		"from herd-boots' HTTP before reporting SUCCESS → cloud-init's EC2 crawl of herd-metadata (%s, in the services' namespace: "+
		"every meta-data/ listing and leaf of 2009-04-04, then user-data), whose meta-data/hostname must be the machine's own. "+
		"Every HTTP connection of a machine leaves from its own address, so herd-boots and herd-metadata identify it as they would a real one, "+
		"with a receive buffer of %d KiB (SO_RCVBUF, not autotuned; Linux doubles it for its overhead): a window of about iPXE's largest, 256 KiB. "+
		"Autotuned (up to tcp_rmem's max), N machines' unread queues, all in this one kernel where real machines each have their own, "+
		"pushed TCP's memory past tcp_mem's pressure mark at N = 1,000: segments dropped at the machines' receive queues, "+
		"herd-boots' retransmissions backed off, and a download now and then stalled past 60 s. "+
		"herd-server (and its throwaway PostgreSQL) run on the host's loopback; the worker calls reach it there directly from the test process "+
		"(servertest trusts 127.0.0.1 as a NAT gateway, so the credential's address binding is not exercised here, and herd-server runs with --max-conns-per-source 0: at its default, 256, the 1,000 machines' TLS handshakes from the one loopback source were cut), and boots' and metadata's Watch "+
		"streams through a TCP forwarder into their namespace. herd-boots and herd-metadata: this commit, `go build`, --log-level warn; herd-server --log-level info"+
		". Files served from herd-boots' /osie/: %s. "+
		"Each size is a round of new machines (new records and workflows pushed first) against the same running services; the services' CPU "+
		"(utime + stime of /proc/PID/stat) and the peak RSS (VmHWM, since the service started) are read before and after the storm. "+
		"**All of it shares the machine's %d CPUs**: the simulated machines (the test process: TLS, HTTP clients, the copy of every byte) "+
		"take CPU from the services, so the figures are the whole lab's. Bytes are counted as the machines read them; MB = 10^6 bytes. "+
		"Errors fail the benchmark; none here.\n\n",
		*sizes, time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(), relayIP, serverIP, nActions, metadataIP,
		machineRcvBuf>>10, describeFiles(files), runtime.NumCPU())
	b.WriteString("The link's limit in the same run, a plain TCP copy over the same veth and route, sent as herd-boots sends (the OS image file again and again with sendfile, " +
		"from the services' namespace to a machine address whose reader reads into 1 MiB buffers, with a machine's receive buffer), while no storm runs:")
	var best float64
	for k, lim := range limits {
		b.WriteString([]string{" before the storms", "; after them"}[k])
		for i := range lim.streams {
			fmt.Fprintf(&b, ", %d connection(s) %.0f MB/s (%.1f Gbit/s)", lim.streams[i], lim.rate[i]/1e6, lim.rate[i]*8/1e9)
			best = max(best, lim.rate[i])
		}
	}
	fmt.Fprintf(&b, ". On %d shared CPUs this copy is bound by the CPU (of the sender, the receiver and whatever else runs), not by the veth, so it moves from run to run.", runtime.NumCPU())
	b.WriteString("\n\n| machines | errors | time to the last machine | machines provisioned per minute | herd-boots served | herd-boots MB/s over the storm | of the TCP copy's best rate | herd-metadata served | DHCP resends | hardware + workflows pushed |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rounds {
		rate := float64(r.boots) / r.wall.Seconds()
		fmt.Fprintf(&b, "| %d | %d | %.1f s | **%.0f** | %.2f GB | **%.0f** | %.0f %% | %.0f kB | %d | %d in %.1f s |\n", r.n, len(r.errs), r.wall.Seconds(),
			float64(r.n)/r.wall.Minutes(), float64(r.boots)/1e9, rate/1e6, 100*rate/best, float64(r.metadata)/1e3, r.retries, r.n, r.pushed.Seconds())
	}
	for _, r := range rounds {
		whats := slices.Sorted(maps.Keys(r.failed))
		for _, what := range whats {
			fmt.Fprintf(&b, "\nN = %d: **%d machines failed at %s**.", r.n, r.failed[what], what)
		}
		if len(whats) > 0 {
			b.WriteString("\n")
		}
	}
	b.WriteString("\nPer step, p50 / p99 over the machines (ms, of the machines without an error; a step's clock starts when the previous one ended; the image and report steps sum their calls):\n\n| step |")
	for _, r := range rounds {
		fmt.Fprintf(&b, " N = %d |", r.n)
	}
	b.WriteString("\n| --- |" + strings.Repeat(" ---: |", len(rounds)) + "\n")
	for step := range nSteps {
		fmt.Fprintf(&b, "| %s |", stepNames[step])
		for _, r := range rounds {
			ds := make([]time.Duration, 0, len(r.results))
			for _, res := range r.results {
				if res.err == nil {
					ds = append(ds, res.steps[step])
				}
			}
			fmt.Fprintf(&b, " %.0f / %.0f |", ms(percentile(ds, 0.5)), ms(percentile(ds, 0.99)))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nCPU time of each process over the storm (user + system; in parentheses: average CPUs busy over the storm) and its peak RSS after it:\n\n| process |")
	for _, r := range rounds {
		fmt.Fprintf(&b, " N = %d |", r.n)
	}
	b.WriteString("\n| --- |" + strings.Repeat(" ---: |", len(rounds)) + "\n")
	names := make([]string, 0, len(pids))
	for name := range pids {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, "| %s |", name)
		for _, r := range rounds {
			u := r.usage[name]
			cpu := u[1].cpu - u[0].cpu
			fmt.Fprintf(&b, " %.1f s (%.2f), %.0f MiB |", cpu.Seconds(), cpu.Seconds()/r.wall.Seconds(), u[1].hwm/(1<<20))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nThe kernel over the storm: each counter's increase in the machines' namespace / the services' namespace "+
		"(/proc/net/snmp and /proc/net/netstat, per namespace), and the most TCP memory in use at once (/proc/net/sockstat, every 100 ms; "+
		"all namespaces share it, so the simulated machines' receive queues count in it with herd-boots' send queues; "+
		"tcp_mem here: pressure from %.0f MiB, hard limit %.0f MiB):\n\n| counter |", pagesMiB(tcpMem[1]), pagesMiB(tcpMem[2]))
	for _, r := range rounds {
		fmt.Fprintf(&b, " N = %d |", r.n)
	}
	b.WriteString("\n| --- |" + strings.Repeat(" ---: |", len(rounds)) + "\n")
	for _, c := range kernelCounters {
		fmt.Fprintf(&b, "| %s (%s) |", c.what, c.key)
		for _, r := range rounds {
			fmt.Fprintf(&b, " %d / %d |", r.kernel[c.key][0], r.kernel[c.key][1])
		}
		b.WriteString("\n")
	}
	b.WriteString("| most TCP memory in use |")
	for _, r := range rounds {
		fmt.Fprintf(&b, " %.0f MiB |", pagesMiB(r.tcpPeak))
	}
	b.WriteString("\n")
	b.WriteString("\nNot covered yet (issue 18): TFTP of the iPXE binary for a share of the machines, N = 5,000, nginx serving the same files to the same clients, herd-server replicas, the worker credential's address binding (calls from the machines' own addresses).\n")
	return b.String()
}

func describeFiles(files [3]served) string {
	parts := make([]string, len(files))
	for i, f := range files {
		parts[i] = fmt.Sprintf("%s %s, %d bytes", f.name, f.what, f.size)
	}
	return strings.Join(parts, "; ")
}

func pagesMiB(pages int64) float64 { return float64(pages*int64(os.Getpagesize())) / (1 << 20) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
