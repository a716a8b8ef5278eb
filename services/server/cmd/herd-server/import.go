package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/herd-metal/herd/pkg/config"
	"github.com/herd-metal/herd/services/server/internal/store"
	"github.com/herd-metal/herd/services/server/internal/tinkimport"
)

// importSettings are `herd-server [flags] import tink`'s own flags.
type importSettings struct {
	from                     string
	dryRun, replace, verbose bool
}

// parseImport reads the arguments after "import": the source kind (tink,
// the only one) and its flags, with HERD_IMPORT_* environment fallbacks.
func parseImport(args []string, lookup func(string) (string, bool), stderr io.Writer) (importSettings, error) {
	var s importSettings
	fs := flag.NewFlagSet("herd-server import tink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herd-server [server flags] import tink --from postgres://USER@HOST:PORT/DATABASE [--dry-run] [--replace] [--verbose]\n\n"+
			"Imports a Tinkerbell v0.6 database (read only) into herd's (--db-url): every live hardware record,\n"+
			"template and workflow with its state, events and data versions, keeping their ids. One transaction:\n"+
			"records herd refuses are listed with the reason and the rest go in; running it again changes nothing.\n"+
			"Exit status 1 when a record was refused. docs/tinkerbell.md has the details.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&s.from, "from", "", "the Tinkerbell v0.6 database, a PostgreSQL URL; libpq's PGPASSWORD and PGSSLMODE are honoured")
	fs.BoolVar(&s.dryRun, "dry-run", false, "do everything and report it, then roll back: nothing is written")
	fs.BoolVar(&s.replace, "replace", false, "hardware records and templates herd has with other content take Tinkerbell's (default: herd's stay)")
	fs.BoolVar(&s.verbose, "verbose", false, "print a line per record")
	if len(args) == 0 || args[0] != "tink" {
		fs.Usage()
		return s, errors.New(`import what? "herd-server import tink --from URL" imports a Tinkerbell v0.6 database, the one source herd knows`)
	}
	if err := config.Parse(fs, args[1:], "HERD_IMPORT_", lookup); err != nil {
		return s, err
	}
	switch {
	case s.from == "":
		return s, errors.New("import tink: --from is required: the Tinkerbell database's URL, e.g. postgres://tinkerbell@db:5432/tinkerbell?sslmode=disable")
	case fs.NArg() > 0:
		return s, fmt.Errorf("import tink: unexpected argument %q", fs.Arg(0))
	}
	return s, nil
}

// runImport imports into the store and prints the report on out.
func runImport(ctx context.Context, s importSettings, st *store.Store, out io.Writer) error {
	rep, err := tinkimport.Run(ctx, s.from, st, tinkimport.Options{DryRun: s.dryRun, Replace: s.replace, Verbose: s.verbose, Out: out})
	if err != nil {
		return err
	}
	if n := rep.RefusedRecords(); n > 0 {
		rest := "the others are in herd"
		if s.dryRun {
			rest = "the others would go in"
		}
		return fmt.Errorf("import tink: %s refused (listed above); %s", tinkimport.Plural(n, "record"), rest)
	}
	return nil
}
