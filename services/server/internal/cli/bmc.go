package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/herd-metal/herd/proto/machine"
)

// The longest password file herd reads: above the server's limit, so the
// server's message names the problem.
const maxPasswordFile = 4096

func (a *app) bmcCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bmc",
		Short: "Manage what herd needs to reach the machines' BMCs",
		Args:  cobra.NoArgs,
	}
	cred := &cobra.Command{
		Use:   "credential",
		Short: "Store, list and delete BMC credentials (a hardware record's bmc.credential names one)",
		Long: `A BMC credential is a user name and password herd-bmc logs in to BMCs with.
herd-server stores it sealed (AES-256-GCM, key outside the database) and no
command or API call shows the user name or password again.`,
		Args: cobra.NoArgs,
	}
	cred.AddCommand(a.bmcCredentialSetCmd(), a.bmcCredentialListCmd(), a.bmcCredentialDeleteCmd())
	cmd.AddCommand(cred)
	return cmd
}

func (a *app) machineClient(ctx context.Context) (machine.MachineServiceClient, error) {
	conn, err := a.connection(ctx)
	if err != nil {
		return nil, err
	}
	return machine.NewMachineServiceClient(conn), nil
}

func nameArg(args []string) error {
	if len(args) != 1 {
		return usagef("want one credential name, got %d arguments", len(args))
	}
	return nil
}

func (a *app) bmcCredentialSetCmd() *cobra.Command {
	var username, passwordFile string
	cmd := &cobra.Command{
		Use:   "set NAME --username USER --password-file FILE|-",
		Short: "Store a BMC credential, or replace the one of that name",
		Long: `Set stores the credential NAME. The password is read from --password-file, or
from stdin with "-" (one trailing newline is dropped), never from the command
line, which other users can see.`,
		Args: func(_ *cobra.Command, args []string) error { return nameArg(args) },
	}
	cmd.Flags().StringVar(&username, "username", "", "user name on the BMC")
	cmd.Flags().StringVar(&passwordFile, "password-file", "", `file holding the password, "-" for stdin`)
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		if username == "" {
			return usagef("--username is missing")
		}
		if passwordFile == "" {
			return usagef(`--password-file is missing (a file, or "-" for stdin)`)
		}
		b, _, err := a.readInput(passwordFile, maxPasswordFile, "BMC password")
		if err != nil {
			return err
		}
		password := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		c, err := a.machineClient(ctx)
		if err != nil {
			return err
		}
		got, err := c.SetBMCCredential(ctx, &machine.SetBMCCredentialRequest{Name: args[0], Username: username, Password: password})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, got, false)
		}
		_, err = fmt.Fprintf(a.stdout, "BMC credential %s stored\n", got.GetName())
		return err
	})
	return cmd
}

func (a *app) bmcCredentialListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the BMC credentials: names, when set and the hardware using each (never a secret)",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, _ []string) error {
		c, err := a.machineClient(ctx)
		if err != nil {
			return err
		}
		list, err := c.ListBMCCredentials(ctx, &machine.ListBMCCredentialsRequest{})
		if err != nil {
			return err
		}
		if a.set.json {
			for _, cr := range list.GetCredentials() {
				if err := writeProto(a.stdout, cr, true); err != nil {
					return err
				}
			}
			return nil
		}
		t := newTable(a.stdout, "NAME", "UPDATED", "USED BY")
		for _, cr := range list.GetCredentials() {
			used := strings.Join(cr.GetUsedBy(), ",")
			if used == "" {
				used = "-"
			}
			t.row(cr.GetName(), when(cr.GetUpdatedAt()), used)
		}
		return t.flush()
	})
	return cmd
}

func (a *app) bmcCredentialDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a BMC credential no hardware record uses",
		Args:  func(_ *cobra.Command, args []string) error { return nameArg(args) },
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.machineClient(ctx)
		if err != nil {
			return err
		}
		if _, err := c.DeleteBMCCredential(ctx, &machine.DeleteBMCCredentialRequest{Name: args[0]}); err != nil {
			return err
		}
		if a.set.json {
			return writeJSON(a.stdout, []byte("{}"), false)
		}
		_, err = fmt.Fprintf(a.stdout, "BMC credential %s deleted\n", args[0])
		return err
	})
	return cmd
}
