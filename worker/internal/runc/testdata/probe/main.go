// Command probe is the second program of the runc tests' image: what
// worker/internal/testprog does not do.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe stat PATH...|cat FILE|cwd|ignore-term")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "stat": // stat PATH...: "PATH present" or "PATH absent" for each
		for _, p := range args {
			if _, err := os.Lstat(p); err == nil {
				fmt.Println(p, "present")
			} else {
				fmt.Println(p, "absent")
			}
		}
	case "cat": // cat FILE: its bytes, NULs as spaces, on one line
		b, err := os.ReadFile(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
	case "cwd":
		d, _ := os.Getwd()
		fmt.Println(d)
	case "ignore-term": // ignores SIGTERM, sleeps an hour
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Hour)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
