package cli

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
)

func (a *app) hardwareCmd() *cobra.Command {
	cmd := group("hardware", "Store, look up and delete hardware records",
		`Hardware records describe machines: their interfaces (MAC, IP, hostname), how they
netboot and their instance metadata. The file format is Tinkerbell v0.6's
hardware JSON; "hardware id ID -o json" prints a record in it.`)
	cmd.AddCommand(a.hardwarePushCmd())
	for _, k := range hardwareKeys() {
		cmd.AddCommand(a.hardwareLookupCmd(k))
	}
	cmd.AddCommand(a.hardwareListCmd(), a.hardwareDeleteCmd())
	return cmd
}

func (a *app) hardwarePushCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "push [--file FILE]",
		Short: "Store a hardware record (create or replace)",
		Long: `Push stores the hardware record in FILE (or read from stdin): a new record, or
a replacement of the record with the same id. The file is checked here first;
a problem is reported with the field it is in, before anything is sent.`,
		Example: `  herd hardware push --file machine1.json
  herd hardware id 0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94 -o json | herd hardware push`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "hardware JSON file; - or absent: stdin")
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, _ []string) error {
		b, src, err := a.readInput(file, spec.MaxHardwareBytes, "hardware JSON")
		if err != nil {
			return err
		}
		hw, err := spec.ParseHardware(b)
		if err != nil {
			return invalidError{src: src, what: "hardware", err: err}
		}
		spec.NormalizeHardware(hw)
		c, err := a.hardwareClient(ctx)
		if err != nil {
			return err
		}
		resp, err := c.Push(ctx, &hardware.PushRequest{Data: hw})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, resp, false)
		}
		_, err = fmt.Fprintf(a.stdout, "Hardware %s pushed\n", hw.GetId())
		return err
	})
	return cmd
}

// hardwareKey is one way to look a record up: "hardware id|ip|mac KEY".
type hardwareKey struct {
	use, short string
	// request checks the argument and makes the request.
	request func(arg string) (*hardware.GetRequest, error)
	// call picks the RPC.
	call func(hardware.HardwareServiceClient) func(context.Context, *hardware.GetRequest, ...grpc.CallOption) (*hardware.Hardware, error)
}

func hardwareKeys() []hardwareKey {
	return []hardwareKey{{
		use: "id ID", short: "Show the hardware record with this id",
		request: func(s string) (*hardware.GetRequest, error) {
			if !isUUID(s) {
				return nil, usagef("%q is not a hardware id (a UUID)", s)
			}
			return &hardware.GetRequest{Id: s}, nil
		},
		call: func(c hardware.HardwareServiceClient) func(context.Context, *hardware.GetRequest, ...grpc.CallOption) (*hardware.Hardware, error) {
			return c.ByID
		},
	}, {
		use: "ip IP", short: "Show the hardware record that has this IP address",
		request: func(s string) (*hardware.GetRequest, error) {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, usagef("%q is not an IP address", s)
			}
			return &hardware.GetRequest{Ip: ip.String()}, nil
		},
		call: func(c hardware.HardwareServiceClient) func(context.Context, *hardware.GetRequest, ...grpc.CallOption) (*hardware.Hardware, error) {
			return c.ByIP
		},
	}, {
		use: "mac MAC", short: "Show the hardware record that has this MAC address",
		request: func(s string) (*hardware.GetRequest, error) {
			mac, err := spec.NormalizeMAC(s)
			if err != nil {
				return nil, usagef("%q is not a MAC address", s)
			}
			return &hardware.GetRequest{Mac: mac}, nil
		},
		call: func(c hardware.HardwareServiceClient) func(context.Context, *hardware.GetRequest, ...grpc.CallOption) (*hardware.Hardware, error) {
			return c.ByMAC
		},
	}}
}

func (a *app) hardwareLookupCmd(k hardwareKey) *cobra.Command {
	cmd := &cobra.Command{
		Use:   k.use,
		Short: k.short,
		Long: k.short + `.

The table shows one row per interface; -o json prints the record as hardware
JSON, which "hardware push" reads back.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		req, err := k.request(args[0])
		if err != nil {
			return err
		}
		c, err := a.hardwareClient(ctx)
		if err != nil {
			return err
		}
		hw, err := k.call(c)(ctx, req)
		if err != nil {
			return err
		}
		if a.set.json {
			return writeHardware(a.stdout, hw, false)
		}
		t := hardwareTable(a.stdout, nil)
		hardwareRows(t, hw, nil)
		return t.flush()
	})
	return cmd
}

func (a *app) hardwareListCmd() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List all hardware records",
		Long: `List prints every hardware record: a table with one row per interface, or with
-o json one hardware JSON document per line.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the ids")
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, _ []string) error {
		c, err := a.hardwareClient(ctx)
		if err != nil {
			return err
		}
		stream, err := c.All(ctx, &hardware.Empty{})
		if err != nil {
			return err
		}
		switch {
		case quiet:
			return each(stream, func(hw *hardware.Hardware) error {
				_, err := fmt.Fprintln(a.stdout, hw.GetId())
				return err
			})
		case a.set.json:
			return each(stream, func(hw *hardware.Hardware) error {
				return writeHardware(a.stdout, hw, true)
			})
		}
		power, err := a.powerStates(ctx)
		if err != nil {
			return err
		}
		t := hardwareTable(a.stdout, power)
		err = each(stream, func(hw *hardware.Hardware) error {
			hardwareRows(t, hw, power)
			return nil
		})
		if ferr := t.flush(); err == nil {
			err = ferr
		}
		return err
	})
	return cmd
}

func (a *app) hardwareDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a hardware record",
		Args:  idArg("hardware"),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.hardwareClient(ctx)
		if err != nil {
			return err
		}
		resp, err := c.Delete(ctx, &hardware.DeleteRequest{Id: args[0]})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, resp, false)
		}
		_, err = fmt.Fprintf(a.stdout, "Hardware %s deleted\n", args[0])
		return err
	})
	return cmd
}
