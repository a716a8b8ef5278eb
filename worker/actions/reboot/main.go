// Command reboot is herd's reboot action: it asks for the machine to
// reboot or power off once the workflow is done.
//
// Environment:
//
//	MODE  reboot (default) or poweroff
//	HOW   request (default): write MODE to /workflow/power and exit 0;
//	      herd-worker reports the action SUCCESS, then reboots the machine,
//	      so the workflow does not start over at this action after the
//	      reboot. now: sync and reboot(2) at once (needs a privileged
//	      container with pid: host; for workers that do not read
//	      /workflow/power, such as Tinkerbell's).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

func main() {
	if err := run(os.Getenv, "/workflow", reboot); err != nil {
		fmt.Fprintln(os.Stderr, "reboot:", err)
		os.Exit(1)
	}
}

func run(getenv func(string) string, workflowDir string, now func(mode string) error) error {
	mode := getenv("MODE")
	if mode == "" {
		mode = "reboot"
	}
	if mode != "reboot" && mode != "poweroff" {
		return fmt.Errorf("MODE=%q: want reboot or poweroff", mode)
	}
	switch how := getenv("HOW"); how {
	case "", "request":
		if err := os.WriteFile(filepath.Join(workflowDir, "power"), []byte(mode+"\n"), 0o644); err != nil {
			return fmt.Errorf("asking the worker to %s: %w", mode, err)
		}
		fmt.Printf("asked herd-worker to %s once this action is reported\n", mode)
		return nil
	case "now":
		fmt.Printf("%s now\n", mode)
		return now(mode)
	default:
		return fmt.Errorf("HOW=%q: want request or now", how)
	}
}

func reboot(mode string) error {
	syscall.Sync()
	cmd := syscall.LINUX_REBOOT_CMD_RESTART
	if mode == "poweroff" {
		cmd = syscall.LINUX_REBOOT_CMD_POWER_OFF
	}
	if err := syscall.Reboot(cmd); err != nil {
		// Without CAP_SYS_BOOT in the host's pid namespace, the magic
		// SysRq key still works from a privileged container.
		key := "b"
		if mode == "poweroff" {
			key = "o"
		}
		if werr := os.WriteFile("/proc/sysrq-trigger", []byte(key), 0o200); werr != nil {
			return fmt.Errorf("%s: reboot(2): %v; sysrq: %w", mode, err, werr)
		}
	}
	return nil
}
