// Command firstboot is the first-boot program of the small OS that herd's
// sandbox installs on its virtual machine (the initramfs /init on the
// image's boot partition, see ../build.sh). It loads the disk and network
// drivers, reads the host name the writefile action put in /etc/hostname
// on the root partition, leases an address on every Ethernet NIC at once
// with its own DHCP client (nclient4: no shell hooks), asks herd-metadata
// for its host name, prints one marker line on the console and powers off:
//
//	herd-installed-os: hostname=NAME (metadata) file=NAME
//
// Kernel command line: herd.metadata=URL (alias packet_base_url=; default
// http://<DHCP server>:50061 of each lease in turn), root=LABEL=herd-root or root=/dev/NAME,
// herd.hostname_file=/etc/hostname, herd.after=poweroff|reboot.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// moduleList is written by build.sh: the .ko files in load order.
const moduleList = "/etc/herd/modules.list"

func main() {
	early := mountBase()
	openConsole()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stdout, "[%7.3f] firstboot: %s\n", uptime().Seconds(), fmt.Sprintf(format, args...))
	}
	for _, err := range early {
		logf("warning: %v", err)
	}
	after := "poweroff"
	if cfg, err := run(logf); err != nil {
		logf("error: %v", err)
	} else {
		after = cfg.After
	}
	logf("%s", after)
	powerOff(after)
}

func run(logf func(string, ...any)) (Config, error) {
	line, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return Config{After: "poweroff"}, err
	}
	cfg, err := ParseCmdline(string(line))
	if err != nil {
		fmt.Println(Marker("", err, "", err))
		return Config{After: "poweroff"}, err
	}
	logf("starting: metadata=%q root=%s hostname_file=%s", cfg.MetadataURL, cfg.Root, cfg.HostnameFile)

	n, skipped, errs := loadModules(moduleList)
	for _, err := range errs {
		logf("module not loaded: %v", err)
	}
	logf("%d kernel modules loaded (%d skipped: no such device)", n, skipped)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fileName, dev, fileErr := readInstalledHostname(ctx, cfg)
	if fileErr == nil {
		logf("%s on %s: %s", cfg.HostnameFile, dev, fileName)
	}

	var metaName string
	leases, metaErr := bringUpNetwork(ctx, logf)
	if metaErr == nil {
		var cands []Candidate
		if cands, metaErr = MetadataCandidates(cfg.MetadataURL, leases); metaErr == nil {
			var from Candidate
			metaName, from, metaErr = fetchHostname(ctx, cands, 30*time.Second, logf)
			if metaErr == nil {
				logf("GET %s: %s", from, metaName)
			}
		}
	}
	if metaErr == nil {
		_ = unix.Sethostname([]byte(metaName))
	}
	fmt.Println(Marker(metaName, metaErr, fileName, fileErr))
	return cfg, nil
}

// fetchHostname asks each candidate in turn until one answers, retrying
// the round for up to patience: herd-metadata may answer 404 until it has
// seen the machine's hardware record, and at OVH the provider's DHCP
// server (asked first) runs no metadata service at all. Each candidate's
// first failure is logged, the rest only in the final error.
func fetchHostname(ctx context.Context, cands []Candidate, patience time.Duration, logf func(string, ...any)) (string, Candidate, error) {
	ctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	errs := make([]error, len(cands))
	for attempt := 0; ; attempt++ {
		for i, c := range cands {
			name, err := getHostname(ctx, c.URL)
			if err == nil {
				return name, c, nil
			}
			if attempt == 0 && len(cands) > 1 {
				logf("GET %s: %v", c, err)
			}
			errs[i] = err
		}
		select {
		case <-ctx.Done():
			return "", Candidate{}, fmt.Errorf("%w (gave up after %d rounds)", CandidateErrors(cands, errs), attempt+1)
		case <-time.After(time.Duration(min(attempt+1, 5)) * 500 * time.Millisecond):
		}
	}
}

func getHostname(ctx context.Context, url string) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 200))
		return "", fmt.Errorf("GET %s: %s %s", url, res.Status, strings.TrimSpace(string(b)))
	}
	return ParseHostname(res.Body)
}
