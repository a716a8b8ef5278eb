package main

import (
	"fmt"
	"strings"
)

// PowerAction is what the machine does once the worker has ended.
type PowerAction string

const (
	Reboot   PowerAction = "reboot"
	PowerOff PowerAction = "poweroff"
)

// ParsePowerAction reads a power request: "reboot", "poweroff" and the
// spellings actions use for them ("restart", "halt", "shutdown", "off").
func ParsePowerAction(s string) (PowerAction, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "reboot", "restart":
		return Reboot, nil
	case "poweroff", "power-off", "power_off", "off", "halt", "shutdown":
		return PowerOff, nil
	}
	return "", fmt.Errorf("unknown power action %q (want reboot or poweroff)", s)
}

// DecidePower picks what to do when the worker has ended. The workflow's
// last action asks through the power file (its first line); when it asked
// nothing (no file, empty or unreadable request) the command line's
// herd.after= applies. The worker's exit status does not change the
// request: a failed workflow leaves the machine as the template says.
func DecidePower(request string, requestErr error, fallback PowerAction) (PowerAction, string) {
	if requestErr != nil {
		return fallback, fmt.Sprintf("no request from the workflow (%v): herd.after=%s", requestErr, fallback)
	}
	first, _, _ := strings.Cut(request, "\n")
	if strings.TrimSpace(first) == "" {
		return fallback, fmt.Sprintf("empty request from the workflow: herd.after=%s", fallback)
	}
	a, err := ParsePowerAction(first)
	if err != nil {
		return fallback, fmt.Sprintf("%v: herd.after=%s", err, fallback)
	}
	return a, "requested by the workflow"
}
