package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// A run's secrets must never reach a service's log: the admin and service
// tokens, the registry's password, the database's, and any machine's
// worker credential (<hardware id>.<generation>.<expiry>.<HMAC>).

// secret is a value the services' logs must not hold.
type secret struct{ name, value string }

// addSecret records a secret of this run for the log check at the end.
func (sb *sandbox) addSecret(name, value string) {
	if value != "" {
		sb.secretsMu.Lock()
		sb.secrets = append(sb.secrets, secret{name, value})
		sb.secretsMu.Unlock()
	}
}

// leaks lists which secrets, or worker credentials of the machines hwIDs,
// text holds.
func leaks(text string, secrets []secret, hwIDs []string) []string {
	var found []string
	for _, s := range secrets {
		if strings.Contains(text, s.value) {
			found = append(found, s.name)
		}
	}
	for _, id := range hwIDs {
		if regexp.MustCompile(regexp.QuoteMeta(id) + `\.\d+\.\d+\.[A-Za-z0-9_-]{16,}`).MatchString(text) {
			found = append(found, "worker credential of "+id)
		}
	}
	return found
}

// serviceLogs are the logs the check reads: every service's, not the
// VMs' consoles (the OSIE's kernel line is the machine's own) nor the
// sandbox's own build and deploy logs.
func serviceLogs(dir string) ([]string, error) {
	all, err := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range all {
		switch strings.TrimSuffix(filepath.Base(p), ".log") {
		case "build", "actions", "images", "deploy":
			continue
		}
		if strings.HasPrefix(filepath.Base(p), "qemu-") {
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// checkSecrets greps every service log for the run's secrets; ok is false
// when any holds one (named, never printed).
func (sb *sandbox) checkSecrets(ms []machine) bool {
	files, err := serviceLogs(sb.dir)
	if err != nil || len(files) == 0 {
		fmt.Fprintf(sb.out, "secrets    no service logs to check (%v)\n", err)
		return false
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	sb.secretsMu.Lock()
	secrets := append([]secret(nil), sb.secrets...)
	sb.secretsMu.Unlock()
	ok := true
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(sb.out, "secrets    %v\n", err)
			ok = false
			continue
		}
		if l := leaks(string(b), secrets, ids); len(l) > 0 {
			fmt.Fprintf(sb.out, "secrets    %s holds %s\n", f, strings.Join(l, ", "))
			ok = false
		}
	}
	if ok {
		fmt.Fprintf(sb.out, "secrets    none of %d secrets nor any worker credential in %d service logs\n", len(secrets), len(files))
	}
	return ok
}
