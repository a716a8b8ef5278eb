package main

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"unicode"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/kcmdline"
)

// Config is what the init reads from the kernel command line that boots
// wrote. The herd.* names are herd's own; the Tinkerbell v0.6 names that
// boots and osie used (grpc_authority=, worker_id=, ...) are accepted as
// aliases so a Tinkerbell-style iPXE script boots this OSIE too. A herd.*
// name always wins over its alias, whatever the order on the line.
type Config struct {
	Server       string           // herd.server= host:port of herd-server's gRPC
	WorkerID     string           // herd.worker_id= (defaults to the boot NIC's MAC)
	Token        string           // herd.token= the per-machine worker credential (secret)
	CertURL      string           // herd.cert_url= where the server's CA is served
	CASHA256     string           // herd.ca_sha256= the CA's pin: hex SHA-256 of its certificate (DER); the worker refuses any other CA
	MetadataURL  string           // herd.metadata= base URL of herd-metadata
	Registry     string           // herd.registry= host[:port] of the action image registry
	RegistryUser string           // herd.registry_user=
	RegistryPass string           // herd.registry_pass= (secret)
	Syslog       string           // herd.syslog= host[:port] of the syslog receiver (UDP, 514 by default)
	Console      string           // herd.console= device the init logs to (default /dev/console)
	MAC          net.HardwareAddr // herd.mac= or BOOTIF=01-aa-bb-cc-dd-ee-ff: the boot NIC
	Worker       string           // herd.worker= path of the worker binary
	After        PowerAction      // herd.after= reboot | poweroff: what to do when the worker asks nothing
	Modules      []string         // herd.modules=a,b extra kernel modules to load
	Debug        bool             // herd.debug: verbose logs (dockerd --debug, DHCP packets)
	Unknown      []string         // herd.* keys this init does not know (logged, not fatal)
}

// Defaults for what the command line may leave out.
const (
	DefaultWorker  = "/usr/bin/herd-worker"
	DefaultConsole = "/dev/console"
	DefaultAfter   = PowerOff
	syslogPort     = "514"
)

// aliases maps Tinkerbell v0.6 kernel parameters to herd's names.
var aliases = map[string]string{
	"grpc_authority":    "herd.server",
	"grpc_cert_url":     "herd.cert_url",
	"worker_id":         "herd.worker_id",
	"docker_registry":   "herd.registry",
	"registry_username": "herd.registry_user",
	"registry_password": "herd.registry_pass",
	"syslog_host":       "herd.syslog",
	"packet_base_url":   "herd.metadata",
}

// ParseCmdline parses /proc/cmdline. Values may be double-quoted (the
// kernel keeps the quotes in /proc/cmdline). It fails only on values that
// cannot be right (a malformed MAC, an unknown herd.after, a CA pin that
// is not 64 hex digits, a control character in a value).
func ParseCmdline(line string) (Config, error) {
	c := Config{Worker: DefaultWorker, Console: DefaultConsole, After: DefaultAfter}
	values := map[string]string{}
	flags := map[string]bool{}
	for _, field := range kcmdline.Split(line) {
		key, value, hasValue := strings.Cut(field, "=")
		value = strings.Trim(value, `"`)
		if alias, ok := aliases[key]; ok {
			if _, set := values[alias]; !set {
				values[alias] = value
			}
			continue
		}
		switch {
		case key == "BOOTIF":
			if _, set := values["herd.mac"]; !set {
				values["BOOTIF"] = value
			}
		case strings.HasPrefix(key, "herd."):
			if hasValue {
				values[key] = value
			} else {
				flags[key] = true
			}
		}
	}
	// herd.mac wins over BOOTIF wherever each stands on the line.
	if _, ok := values["herd.mac"]; ok {
		delete(values, "BOOTIF")
	}
	for _, key := range slices.Sorted(maps.Keys(values)) {
		value := values[key]
		// A quoted value may hold anything the bootloader passed, but no
		// setting of herd's holds a control character: one is a broken or
		// forged line (the value itself is not shown: it may be a secret).
		if i := strings.IndexFunc(value, unicode.IsControl); i >= 0 {
			return Config{}, fmt.Errorf("%s: the value holds control character %#02x at byte %d", key, value[i], i)
		}
		var err error
		switch key {
		case "herd.server":
			c.Server = value
		case "herd.worker_id":
			c.WorkerID = value
		case "herd.token":
			c.Token = value
		case "herd.cert_url":
			c.CertURL = value
		case "herd.ca_sha256":
			if c.CASHA256, err = connect.ParsePin(value); err != nil {
				return Config{}, fmt.Errorf("herd.ca_sha256: %w", err)
			}
		case "herd.metadata":
			c.MetadataURL = value
		case "herd.registry":
			c.Registry = value
		case "herd.registry_user":
			c.RegistryUser = value
		case "herd.registry_pass":
			c.RegistryPass = value
		case "herd.syslog":
			c.Syslog = value
		case "herd.console":
			c.Console = value
		case "herd.worker":
			c.Worker = value
		case "herd.debug":
			c.Debug = value != "0" && value != "false"
		case "herd.modules":
			for _, m := range strings.Split(value, ",") {
				if m = strings.TrimSpace(m); m != "" {
					c.Modules = append(c.Modules, m)
				}
			}
		case "herd.after":
			if c.After, err = ParsePowerAction(value); err != nil {
				return Config{}, fmt.Errorf("herd.after=%q: %w", value, err)
			}
		case "herd.mac":
			if c.MAC, err = net.ParseMAC(value); err != nil {
				return Config{}, fmt.Errorf("herd.mac=%q: %w", value, err)
			}
		case "BOOTIF":
			if c.MAC, err = parseBootif(value); err != nil {
				return Config{}, fmt.Errorf("BOOTIF=%q: %w", value, err)
			}
		default:
			c.Unknown = append(c.Unknown, key)
		}
	}
	for key := range flags {
		if key == "herd.debug" {
			c.Debug = true
		} else if _, set := values[key]; !set {
			c.Unknown = append(c.Unknown, key)
		}
	}
	slices.Sort(c.Unknown)
	return c, nil
}

// parseBootif reads PXELINUX/iPXE's BOOTIF=01-aa-bb-cc-dd-ee-ff, where the
// leading 01 is the ARP hardware type (Ethernet). A bare MAC is accepted.
func parseBootif(v string) (net.HardwareAddr, error) {
	v = strings.ReplaceAll(v, "-", ":")
	if len(v) == len("01:aa:bb:cc:dd:ee:ff") && strings.HasPrefix(v, "01:") {
		v = v[3:]
	}
	mac, err := net.ParseMAC(v)
	if err != nil {
		return nil, err
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("not an Ethernet MAC")
	}
	return mac, nil
}

// SyslogAddr is the UDP address to send log lines to, or "" for none.
func (c Config) SyslogAddr() string {
	if c.Syslog == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(c.Syslog); err == nil {
		return c.Syslog
	}
	return net.JoinHostPort(strings.Trim(c.Syslog, "[]"), syslogPort)
}

// WorkerEnv is the environment herd-worker starts with: herd's HERD_*
// names and, for a tink-worker dropped in instead, Tinkerbell's names.
// Empty settings are left out so the worker's own defaults apply.
func (c Config) WorkerEnv(dockerSock, powerFile string) []string {
	env := []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"DOCKER_HOST=unix://" + dockerSock,
		"HERD_DOCKER_HOST=unix://" + dockerSock,
		"HERD_POWER_FILE=" + powerFile,
	}
	add := func(value string, names ...string) {
		if value == "" {
			return
		}
		for _, n := range names {
			env = append(env, n+"="+value)
		}
	}
	add(c.Server, "HERD_SERVER", "TINKERBELL_GRPC_AUTHORITY")
	add(c.WorkerID, "HERD_ID", "WORKER_ID")
	add(c.Token, "HERD_TOKEN")
	add(c.CertURL, "HERD_CERT_URL", "TINKERBELL_CERT_URL")
	add(c.CASHA256, "HERD_CA_SHA256")
	add(c.MetadataURL, "HERD_METADATA_URL")
	add(c.Registry, "HERD_REGISTRY", "DOCKER_REGISTRY")
	add(c.RegistryUser, "HERD_REGISTRY_USER", "REGISTRY_USERNAME")
	add(c.RegistryPass, "HERD_REGISTRY_PASSWORD", "REGISTRY_PASSWORD")
	if c.Debug {
		env = append(env, "HERD_LOG_LEVEL=debug")
	}
	return env
}
