package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/herd-metal/herd/pkg/kcmdline"
)

// Config is what the first-boot program reads from the kernel command
// line (syslinux.cfg on the boot partition, written by build.sh).
type Config struct {
	MetadataURL  string // herd.metadata= (alias packet_base_url=): herd-metadata's base URL
	Root         string // root=: the partition holding the installed files (/dev/X or LABEL=x)
	HostnameFile string // herd.hostname_file=: the file writefile puts the host name in
	After        string // herd.after=: poweroff (default) or reboot
}

// Defaults for what the command line leaves out.
const (
	DefaultRoot         = "LABEL=herd-root"
	DefaultHostnameFile = "/etc/hostname"
	// metadataPort is herd-metadata's (and hegel's) well-known port, used
	// with the DHCP server's address when herd.metadata= is missing.
	metadataPort = "50061"
	// hostnamePath is the EC2-style metadata path of the host name.
	hostnamePath = "/2009-04-04/meta-data/hostname"
)

// ParseCmdline reads /proc/cmdline. Values may be double-quoted; a herd.*
// name wins over its Tinkerbell alias whatever the order.
func ParseCmdline(line string) (Config, error) {
	c := Config{Root: DefaultRoot, HostnameFile: DefaultHostnameFile, After: "poweroff"}
	var alias string
	for _, field := range kcmdline.Split(line) {
		key, value, _ := strings.Cut(field, "=")
		value = strings.Trim(value, `"`)
		switch key {
		case "herd.metadata":
			c.MetadataURL = value
		case "packet_base_url":
			alias = value
		case "root":
			c.Root = value
		case "herd.hostname_file":
			c.HostnameFile = value
		case "herd.after":
			c.After = value
		}
	}
	if c.MetadataURL == "" {
		c.MetadataURL = alias
	}
	if c.MetadataURL != "" {
		u, err := url.Parse(c.MetadataURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("herd.metadata=%q: want an http(s) URL such as http://10.1.0.2:50061", c.MetadataURL)
		}
	}
	if !strings.HasPrefix(c.HostnameFile, "/") {
		return c, fmt.Errorf("herd.hostname_file=%q: want an absolute path", c.HostnameFile)
	}
	if c.After != "poweroff" && c.After != "reboot" {
		return c, fmt.Errorf("herd.after=%q: want poweroff or reboot", c.After)
	}
	return c, nil
}

// HostnameURL is where the host name is asked for: the configured base
// URL, or herd-metadata's well-known port on the DHCP server (boots and
// metadata usually share a host) when the command line names none.
func HostnameURL(base string, dhcpServer net.IP) (string, error) {
	if base == "" {
		if dhcpServer == nil || dhcpServer.IsUnspecified() {
			return "", errors.New("no herd.metadata= on the kernel command line and no DHCP server address to guess from")
		}
		base = "http://" + net.JoinHostPort(dhcpServer.String(), metadataPort)
	}
	return strings.TrimRight(base, "/") + hostnamePath, nil
}

// ParseHostname reads a host name from /etc/hostname or the metadata
// answer: the first non-blank line that is not a comment, trimmed. It
// refuses what could not be a host name (spaces, control characters,
// over 253 bytes).
func ParseHostname(r io.Reader) (string, error) {
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) > 253 {
			return "", fmt.Errorf("host name of %d bytes: over 253", len(line))
		}
		for _, r := range line {
			if r <= ' ' || r == 0x7f {
				return "", fmt.Errorf("host name %q holds a space or control character", line)
			}
		}
		return line, nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no host name in it (empty)")
}

// Marker is the console line the sandbox and its tests look for:
//
//	herd-installed-os: hostname=NAME (metadata) file=NAME
//
// where hostname= is what herd-metadata answered and file= what the
// hostname file on the installed disk holds. A failure shows as "?" with
// the reason in parentheses, so the line is always printed.
func Marker(meta string, metaErr error, file string, fileErr error) string {
	m := "hostname=" + meta + " (metadata)"
	if metaErr != nil {
		m = "hostname=? (metadata: " + oneLine(metaErr.Error()) + ")"
	}
	f := "file=" + file
	if fileErr != nil {
		f = "file=? (" + oneLine(fileErr.Error()) + ")"
	}
	return "herd-installed-os: " + m + " " + f
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
