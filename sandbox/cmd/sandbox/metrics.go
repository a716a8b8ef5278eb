package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The services' metrics must show the provisioning: each expectation is
// a sum of samples that must grow by at least a number per machine
// between power-on and the end.

// series selects samples: a metric name and labels that must hold these
// values (a value starting with * matches any value ending in the rest).
type series struct {
	name   string
	labels map[string]string
}

// expectation is one check on a service's metrics: the sum over its
// pages (one per herd-server replica).
type expectation struct {
	service    string
	urls       []string
	what       series
	perMachine float64
	why        string
}

// expectations are the checks of a run; servers are the herd-server
// replicas' /metrics pages.
func expectations(servers []string) []expectation {
	boots, meta := []string{"http://" + bootsHTTP + "/metrics"}, []string{"http://" + metaAddr + "/metrics"}
	return []expectation{
		{"herd-boots", boots, series{"herd_boots_dhcp_packets_total", map[string]string{"outcome": "boot_file"}}, 1, "DHCP answers with a boot file"},
		{"herd-boots", boots, series{"herd_boots_script_renders_total", map[string]string{"script": "osie"}}, 1, "OSIE scripts rendered"},
		{"herd-metadata", meta, series{"herd_metadata_requests_total", map[string]string{"route": "meta-data/hostname", "code": "200"}}, 2, "hostname answered (writefile, then the installed OS)"},
		{"herd-server", servers, reportsAccepted, 6, "action reports accepted (3 actions, RUNNING and SUCCESS)"},
	}
}

// scrape reads every expectation's current sum; a service that does not
// answer counts as an error for its expectations. frozen are pages read
// before their service was killed (--fault kill-server), by URL: used as
// they are, the service being gone.
func scrape(ctx context.Context, exps []expectation, frozen map[string]string) ([]float64, error) {
	c := nsClient()
	pages := map[string]string{}
	out := make([]float64, len(exps))
	for i, e := range exps {
		for _, url := range e.urls {
			page, ok := frozen[url]
			if !ok {
				page, ok = pages[url]
			}
			if !ok {
				var err error
				if page, err = fetchMetrics(ctx, c, url); err != nil {
					return nil, fmt.Errorf("%s metrics: %w", e.service, err)
				}
				pages[url] = page
			}
			out[i] += sumSeries(page, e.what)
		}
	}
	return out, nil
}

// fetchMetrics reads one /metrics page.
func fetchMetrics(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return "", fmt.Errorf("%s: %w", url, err)
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, res.Status)
	}
	return string(b), nil
}

// sumSeries adds the values of the samples of s in a Prometheus text page.
func sumSeries(page string, s series) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(page))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, s.name) {
			continue
		}
		rest := line[len(s.name):]
		labels := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels = parseLabels(rest[1:end])
			rest = rest[end+1:]
		} else if !strings.HasPrefix(rest, " ") {
			continue // another metric with this one's name as a prefix
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || !matches(labels, s.labels) {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func matches(have, want map[string]string) bool {
	for k, w := range want {
		v, ok := have[k]
		if p, prefix := strings.CutPrefix(w, "*"); prefix {
			if !ok || !strings.HasSuffix(v, p) {
				return false
			}
		} else if !ok || v != w {
			return false
		}
	}
	return true
}

// parseLabels reads `a="x",b="y"` (values with \" and \\ escapes).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, `="`)
		if !ok {
			break
		}
		var v strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				if rest[i] == 'n' {
					v.WriteByte('\n')
					continue
				}
			}
			v.WriteByte(rest[i])
		}
		out[strings.TrimSpace(k)] = v.String()
		if i >= len(rest) {
			break
		}
		s = strings.TrimPrefix(rest[i+1:], ",")
	}
	return out
}

// metricsVerdict compares the sums before and after: one line per
// expectation, and whether all of them moved enough.
func metricsVerdict(exps []expectation, before, after []float64, machines int) ([]string, bool) {
	ok := true
	var lines []string
	for i, e := range exps {
		want := e.perMachine * float64(machines)
		got := after[i] - before[i]
		mark := "ok"
		if got < want {
			mark, ok = "TOO FEW", false
		}
		lines = append(lines, fmt.Sprintf("%-13s %-34s +%-4g (want >= %g: %s) %s", e.service, e.what.name, got, want, e.why, mark))
	}
	return lines, ok
}
