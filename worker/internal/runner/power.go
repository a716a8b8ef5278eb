package runner

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// PowerFile is where an action asks the worker to reboot or power off the
// machine once the action is reported: /workflow/power holding "reboot"
// or "poweroff". Rebooting from inside the action would lose its SUCCESS
// report, and the workflow would resume at the reboot after the reboot.
const PowerFile = "power"

// ErrPowerOff: the machine is going down at an action's request.
var ErrPowerOff = errors.New("the machine is rebooting or powering off at an action's request")

// power carries out an action's power request; it reports whether the
// machine is going down.
func (w *Worker) power(ctx context.Context, log *slog.Logger, wfID string) bool {
	name := filepath.Join(w.workflowDir(wfID), PowerFile)
	b, err := os.ReadFile(name)
	if err != nil {
		return false
	}
	_ = os.Remove(name)
	mode := strings.TrimSpace(string(b))
	if mode != "reboot" && mode != "poweroff" {
		log.WarnContext(ctx, "ignoring a power request that is neither reboot nor poweroff", "request", mode)
		return false
	}
	if w.cfg.Power == nil {
		log.WarnContext(ctx, "an action asked for "+mode+"; this worker may not do it (power control off)")
		return false
	}
	log.InfoContext(ctx, "the action asked for "+mode+"; doing it now")
	if err := w.cfg.Power(ctx, mode); err != nil {
		log.ErrorContext(ctx, mode+" failed", "error", err)
		return false
	}
	return true
}
