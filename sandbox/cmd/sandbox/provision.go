package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// hardwareJSON is the machine's Tinkerbell hardware record.
func hardwareJSON(m machine, allowPXE bool) string {
	hw := map[string]any{
		"id": m.ID,
		"metadata": map[string]any{
			"facility": map[string]any{"facility_code": "sandbox"},
			"instance": map[string]any{"hostname": m.Hostname},
		},
		"network": map[string]any{
			"interfaces": []any{map[string]any{
				"dhcp": map[string]any{
					"arch": "x86_64", "hostname": m.Hostname, "mac": m.MAC, "uefi": m.UEFI,
					"ip": map[string]any{"address": m.IP, "netmask": vmNetmask, "gateway": hostIP},
				},
				"netboot": map[string]any{"allow_pxe": allowPXE, "allow_workflow": true},
			}},
		},
	}
	if m.BMCIP != "" {
		// herd-bmc reaches it with the stored credential named here.
		hw["bmc"] = map[string]any{"address": m.BMCIP, "protocol": "ipmi", "port": bmcPort, "credential": bmcCredential}
	}
	b, _ := json.MarshalIndent(hw, "", "  ")
	return string(b) + "\n"
}

// template is the workflow the VM runs: write the OS image, put its host
// name (from herd-metadata) in /etc/hostname of its root partition,
// reboot. The action images carry tag, in the registry boots names.
// progressEvery, unless 0, is image2disk's interval between progress
// lines (--fault osie-reboot resets the VM once one shows the stream).
func template(imageURL, imageSHA256, tag string, progressEvery time.Duration) string {
	var b strings.Builder
	b.WriteString(`version: "0.1"
name: sandbox-install
global_timeout: 1800
tasks:
  - name: install
    worker: "{{.device_1}}"
    actions:
      - name: image2disk
        image: image2disk:` + tag + `
        timeout: 900
        environment:
          IMG_URL: ` + imageURL + `
          DEST_DISK: /dev/vda
          COMPRESSED: "true"
          CHECKSUM: sha256:` + imageSHA256 + `
`)
	if progressEvery > 0 {
		b.WriteString(`          PROGRESS_EVERY: ` + progressEvery.String() + `
`)
	}
	b.WriteString(`      - name: writefile
        image: writefile:` + tag + `
        timeout: 120
        environment:
          DEST_DISK: /dev/vda2
          FS_TYPE: ext4
          DEST_PATH: /etc/hostname
          CONTENTS_URL: http://` + metaAddr + `/2009-04-04/meta-data/hostname
          MODE: "0644"
      - name: reboot
        image: reboot:` + tag + `
        timeout: 60
`)
	return b.String()
}

// event is one workflow action report as `herd workflow watch -o json`
// prints it (protojson, proto field names).
type event struct {
	WorkflowID string    `json:"workflow_id"`
	Task       string    `json:"task_name"`
	Action     string    `json:"action_name"`
	State      string    `json:"action_status"`
	Seconds    int64s    `json:"seconds"`
	Message    string    `json:"message"`
	CreatedAt  time.Time `json:"created_at"`
	WorkerID   string    `json:"worker_id"`
}

// int64s reads protojson's int64: a JSON string, or a number.
type int64s int64

func (n *int64s) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	*n = int64s(v)
	return err
}

func parseEvent(line string) (event, error) {
	var e event
	err := json.Unmarshal([]byte(line), &e)
	e.State = strings.TrimPrefix(e.State, "STATE_")
	return e, err
}

func finalState(s string) bool { return s == "SUCCESS" || s == "FAILED" || s == "TIMEOUT" }

// netbootNote tells herd-server's notes of the workflow switching the
// machine's allow_pxe (task and action "netboot") from action reports.
func netbootNote(e event) bool { return e.Task == "netboot" && e.Action == "netboot" }

// bootNote tells herd-boots' and herd-metadata's notes on the machine's
// way (task and action "boot": DHCP offers, scripts, kernel, metadata
// read) from action reports.
func bootNote(e event) bool { return e.Task == "boot" && e.Action == "boot" }

// actionEvents are evs without herd-server's netboot and BMC notes.
func actionEvents(evs []event) []event {
	var out []event
	for _, e := range evs {
		if !netbootNote(e) && !bmcNote(e) {
			out = append(out, e)
		}
	}
	return out
}

// actionTime is one action's run as the summary shows it.
type actionTime struct {
	Name, State   string
	Start, End    time.Time
	ServerSeconds int64
	Message       string
}

// actionTimes folds a workflow's events into one row per action, in the
// order they started; herd-server's netboot notes are no action.
func actionTimes(evs []event) []actionTime {
	var out []actionTime
	idx := map[string]int{}
	for _, e := range actionEvents(evs) {
		key := e.Task + "/" + e.Action
		i, ok := idx[key]
		if !ok {
			idx[key] = len(out)
			out = append(out, actionTime{Name: e.Action})
			i = len(out) - 1
		}
		a := &out[i]
		a.State = e.State
		if e.State == "RUNNING" && a.Start.IsZero() {
			a.Start = e.CreatedAt
		}
		if finalState(e.State) {
			a.End, a.ServerSeconds, a.Message = e.CreatedAt, int64(e.Seconds), e.Message
		}
	}
	return out
}

// duration is how long a ran: from its RUNNING report to its final one
// when both are known, else the seconds its worker reported.
func (a actionTime) duration() time.Duration {
	if !a.Start.IsZero() && !a.End.IsZero() && a.End.After(a.Start) {
		return a.End.Sub(a.Start)
	}
	return time.Duration(a.ServerSeconds) * time.Second
}

// markerHostname returns the host names the installed OS printed on its
// console (`herd-installed-os: hostname=NAME (metadata) file=NAME`).
func markerHostname(line string) (metadata, file string, ok bool) {
	const marker = "herd-installed-os: "
	i := strings.Index(line, marker)
	if i < 0 {
		return "", "", false
	}
	for _, f := range strings.Fields(line[i+len(marker):]) {
		switch {
		case strings.HasPrefix(f, "hostname="):
			metadata = strings.TrimPrefix(f, "hostname=")
		case strings.HasPrefix(f, "file="):
			file = strings.TrimPrefix(f, "file=")
		}
	}
	return metadata, file, true
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}
