package cli

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"
)

// importCmd is `herd import tink`, which the issue and the docs name. The
// import writes herd's database with ids, states, events and data
// versions the API does not take, and only herd-server touches that
// database: so it is `herd-server import tink`, and this command says how
// to run it (exit code 2) instead of doing it from afar.
func (a *app) importCmd() *cobra.Command {
	cmd := group("import", "Import another installation's records (see import tink)",
		`Imports run inside herd-server's own binary, where herd's database is.`)
	var (
		from   string
		dryRun bool
	)
	tink := &cobra.Command{
		Use:   "tink --from postgres://...",
		Short: "Import a Tinkerbell v0.6 database: run it as herd-server import tink",
		Long: `Importing a Tinkerbell v0.6 database (every hardware record, live template and
workflow with its state, events and data versions) writes herd's database
directly, and only herd-server touches that database. Run it where herd-server
runs, with herd-server's own settings (HERD_DB_URL):

    herd-server import tink --from postgres://USER@HOST:PORT/DATABASE [--dry-run]

This command prints that line for the URL given and exits with code 2.
docs/tinkerbell.md, "Importing a Tinkerbell v0.6 database", has the details.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			line := "herd-server import tink --from " + redactURL(from)
			if dryRun {
				line += " --dry-run"
			}
			return usagef("the import runs in herd-server, which alone writes herd's database; on the server host run:\n    %s", line)
		},
	}
	tink.Flags().StringVar(&from, "from", "postgres://USER@HOST:PORT/DATABASE", "the Tinkerbell v0.6 database")
	tink.Flags().BoolVar(&dryRun, "dry-run", false, "report what the import would do, write nothing")
	cmd.AddCommand(tink)
	return cmd
}

// redactURL hides a URL's password, for printing a command back.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return fmt.Sprintf("%q", s)
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "PASSWORD")
	}
	return "'" + u.String() + "'"
}
