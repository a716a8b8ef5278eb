package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/template"
)

func (a *app) templateCmd() *cobra.Command {
	cmd := group("template", "Create, show, update and delete templates",
		`Templates are Tinkerbell v0.6 template YAML: tasks of container actions, with
Go template fields such as {{.device_1}} filled in when a workflow is created.`)
	cmd.AddCommand(a.templateCreateCmd(), a.templateGetCmd(), a.templateListCmd(),
		a.templateUpdateCmd(), a.templateDeleteCmd())
	return cmd
}

// templateRef selects a template by id when arg is a UUID, else by name.
func templateRef(arg string) *template.GetRequest {
	if isUUID(arg) {
		return &template.GetRequest{GetBy: &template.GetRequest_Id{Id: arg}}
	}
	return &template.GetRequest{GetBy: &template.GetRequest_Name{Name: arg}}
}

// templateFileFlags adds --file (and tink's --path) and --name.
func templateFileFlags(cmd *cobra.Command, file, name *string) {
	f := cmd.Flags()
	f.StringVarP(file, "file", "f", "", "template YAML file; - or absent: stdin")
	f.StringVarP(file, "path", "p", "", "same as --file (tink's name for it)")
	_ = f.MarkHidden("path")
	f.StringVarP(name, "name", "n", "", "template name (default: the name: field of the YAML)")
}

// readTemplate reads and checks a template file, returning its YAML and
// name (--name, else its name: field).
func (a *app) readTemplate(file, name string) (data, resolved string, err error) {
	b, src, err := a.readInput(file, spec.MaxTemplateBytes, "template YAML")
	if err != nil {
		return "", "", err
	}
	data = string(b)
	if err := spec.ValidateTemplate(data); err != nil {
		return "", "", invalidError{src: src, what: "template", err: err}
	}
	if name != "" {
		if err := spec.ValidateName(name); err != nil {
			return "", "", usagef("--name %q: %v", name, err)
		}
	} else if name, err = spec.TemplateName(data); err != nil {
		return "", "", invalidError{src: src, what: "template", err: err}
	}
	if name == "" {
		return "", "", fmt.Errorf("%s: the template has no name: field; give --name", src)
	}
	return data, name, nil
}

func (a *app) templateCreateCmd() *cobra.Command {
	var file, name string
	cmd := &cobra.Command{
		Use:   "create [--file FILE] [--name NAME]",
		Short: "Store a new template",
		Long: `Create stores the template YAML in FILE (or read from stdin) and prints its id.
The YAML is checked here first and problems are reported before anything is
sent. The template is named by --name, else by its name: field.`,
		Example: `  herd template create --file hello-world.yml
  herd template create --name hello < hello-world.yml`,
		Args: cobra.NoArgs,
	}
	templateFileFlags(cmd, &file, &name)
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, _ []string) error {
		data, name, err := a.readTemplate(file, name)
		if err != nil {
			return err
		}
		c, err := a.templateClient(ctx)
		if err != nil {
			return err
		}
		resp, err := c.CreateTemplate(ctx, &template.WorkflowTemplate{Name: name, Data: data})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, resp, false)
		}
		_, err = fmt.Fprintf(a.stdout, "Created Template: %s\n", resp.GetId())
		return err
	})
	return cmd
}

func (a *app) templateGetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get ID|NAME",
		Short: "Show a template",
		Long: `Get prints the YAML of the template with this id (a UUID) or name; with -o json
the whole record (id, name, times, data).`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.templateClient(ctx)
		if err != nil {
			return err
		}
		t, err := c.GetTemplate(ctx, templateRef(args[0]))
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, t, false)
		}
		return writeText(a.stdout, t.GetData())
	})
	return cmd
}

func (a *app) templateListCmd() *cobra.Command {
	var (
		pattern string
		quiet   bool
	)
	cmd := &cobra.Command{
		Use:   "list [--name PATTERN]",
		Short: "List templates",
		Long: `List prints the templates, those whose name matches PATTERN with --name. The
pattern is Tinkerbell v0.6's: case-insensitive, * or % any run of characters,
_ one character, a backslash before one of them makes it literal. Like v0.6,
the list carries ids, names and times, not the YAML: "template get" prints
that. With -o json, one JSON document per line.`,
		Example: `  herd template list --name 'ubuntu-*'
  herd template list -q --name 'HELLO%'`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&pattern, "name", "n", "", "only templates whose name matches this pattern (case-insensitive; * or %, _)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the ids")
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, _ []string) error {
		c, err := a.templateClient(ctx)
		if err != nil {
			return err
		}
		req := &template.ListRequest{}
		if pattern != "" {
			req.FilterBy = &template.ListRequest_Name{Name: pattern}
		}
		stream, err := c.ListTemplates(ctx, req)
		if err != nil {
			return err
		}
		switch {
		case quiet:
			return each(stream, func(t *template.WorkflowTemplate) error {
				_, err := fmt.Fprintln(a.stdout, t.GetId())
				return err
			})
		case a.set.json:
			return each(stream, func(t *template.WorkflowTemplate) error {
				return writeProto(a.stdout, t, true)
			})
		}
		tw := newTable(a.stdout, "ID", "NAME", "CREATED AT", "UPDATED AT")
		err = each(stream, func(t *template.WorkflowTemplate) error {
			tw.row(t.GetId(), t.GetName(), when(t.GetCreatedAt()), when(t.GetUpdatedAt()))
			return nil
		})
		if ferr := tw.flush(); err == nil {
			err = ferr
		}
		return err
	})
	return cmd
}

func (a *app) templateUpdateCmd() *cobra.Command {
	var file, name string
	cmd := &cobra.Command{
		Use:   "update ID [--file FILE] [--name NAME]",
		Short: "Replace a template's YAML",
		Long: `Update replaces the YAML (and name) of the template with this id by FILE (or
stdin), checked here first. The name is --name, else the YAML's name: field.
Workflows created earlier keep the YAML they were rendered from.`,
		Args: idArg("template"),
	}
	templateFileFlags(cmd, &file, &name)
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		data, name, err := a.readTemplate(file, name)
		if err != nil {
			return err
		}
		c, err := a.templateClient(ctx)
		if err != nil {
			return err
		}
		resp, err := c.UpdateTemplate(ctx, &template.WorkflowTemplate{Id: args[0], Name: name, Data: data})
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, resp, false)
		}
		_, err = fmt.Fprintf(a.stdout, "Template %s updated\n", args[0])
		return err
	})
	return cmd
}

func (a *app) templateDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete ID|NAME",
		Short: "Delete a template",
		Long:  `Delete removes the template with this id (a UUID) or name. Existing workflows keep working.`,
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.action(func(ctx context.Context, _ *cobra.Command, args []string) error {
		c, err := a.templateClient(ctx)
		if err != nil {
			return err
		}
		resp, err := c.DeleteTemplate(ctx, templateRef(args[0]))
		if err != nil {
			return err
		}
		if a.set.json {
			return writeProto(a.stdout, resp, false)
		}
		_, err = fmt.Fprintf(a.stdout, "Template %s deleted\n", args[0])
		return err
	})
	return cmd
}

// writeText prints s ending with exactly one newline.
func writeText(w io.Writer, s string) error {
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	_, err := io.WriteString(w, s)
	return err
}
