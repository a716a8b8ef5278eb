// Command testprog is the one program inside the worker tests' container
// images (a static binary imported as a one-file image). Its first
// argument says what to do, so one image plays every action.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testprog echo|exit|sleep|tick|env|pid|data-set|data-get|append ...")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo": // echo WORDS...
		fmt.Println(strings.Join(args, " "))
	case "exit": // exit CODE [STDERR LINES...]
		for _, l := range args[1:] {
			fmt.Fprintln(os.Stderr, l)
		}
		code, _ := strconv.Atoi(args[0])
		os.Exit(code)
	case "sleep": // sleep DURATION; SIGTERM ends it (PID 1 has no default handler)
		d, _ := time.ParseDuration(args[0])
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("sleeping", d)
		select {
		case <-time.After(d):
		case s := <-sig:
			fmt.Println("got", s)
			os.Exit(143)
		}
	case "tick": // tick N INTERVAL: prints "tick 1" ... "tick N", INTERVAL apart
		n, _ := strconv.Atoi(args[0])
		d, _ := time.ParseDuration(args[1])
		for i := 1; i <= n; i++ {
			if i > 1 {
				time.Sleep(d)
			}
			fmt.Println("tick", i)
		}
	case "env": // env NAME...: prints NAME=value of each
		for _, n := range args {
			fmt.Printf("%s=%s\n", n, os.Getenv(n))
		}
	case "pid":
		fmt.Println("pid", os.Getpid())
	case "data-set": // data-set KEY VALUE: sets a key in /workflow/data
		m := readData()
		m[args[0]] = args[1]
		b, _ := json.Marshal(m)
		must(os.WriteFile("/workflow/data", b, 0o644))
		fmt.Println("set", args[0])
	case "data-get": // data-get KEY WANT: fails unless the key holds WANT
		m := readData()
		if fmt.Sprint(m[args[0]]) != args[1] {
			fmt.Fprintf(os.Stderr, "workflow data %s = %v, want %s\n", args[0], m[args[0]], args[1])
			os.Exit(1)
		}
		fmt.Println("data ok")
	case "append": // append FILE LINE
		f, err := os.OpenFile(args[0], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		must(err)
		_, err = fmt.Fprintln(f, args[1])
		must(err)
		must(f.Close())
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func readData() map[string]any {
	m := map[string]any{}
	b, err := os.ReadFile("/workflow/data")
	must(err)
	must(json.Unmarshal(b, &m))
	return m
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
