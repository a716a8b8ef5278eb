// Command report writes docs/reliability.md from the rows the
// TestReliability* tests recorded (make reliability).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/reliability"
)

func main() {
	in := flag.String("in", "", "the JSON lines the tests wrote (HERD_RELIABILITY_OUT)")
	out := flag.String("out", "docs/reliability.md", "markdown file to write the table into (its reliability section)")
	commit := flag.String("commit", "unknown", "commit the tests ran on")
	flag.Parse()
	if err := run(*in, *out, *commit); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, out, commit string) error {
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	rows, err := reliability.Read(data)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("%s holds no rows: did the TestReliability tests run?", in)
	}
	return benchdoc.WriteSection(out, "reliability", reliability.Render(rows, commit, time.Now()))
}
