// Package tinkimport imports a Tinkerbell v0.6 installation into herd:
// every live hardware record, every live template and every live workflow
// with its state, events and data versions, keeping their ids. It reads
// Tinkerbell's database (read-only, one snapshot) and writes herd's through
// the store, in one transaction (store.Import), so it runs inside
// herd-server's own binary: `herd-server import tink --from URL`.
//
// A record herd refuses (its checks in pkg/spec, or a MAC or IP another
// record holds) is listed with the reason and the others go in. Running it
// again changes nothing (every record "unchanged"); --dry-run does all the
// work and rolls it back, so it reports exactly what a real run would do.
package tinkimport

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"

	_ "github.com/lib/pq" // the "postgres" driver

	"github.com/herd-metal/herd/services/server/internal/store"
)

// Options of Run.
type Options struct {
	// DryRun: do everything, report it, write nothing.
	DryRun bool
	// Replace: hardware records and templates herd has with other content
	// take Tinkerbell's (default: herd's copies are kept and listed).
	Replace bool
	// Verbose prints a line per record.
	Verbose bool
	// Out receives the progress lines and the report.
	Out io.Writer
	// Every is how many records a progress line stands for (default 1000).
	Every int
}

// pageSize is how many rows of a table are read at a time.
const pageSize = 500

// Tally counts what happened to one kind of record.
type Tally struct {
	Created, Updated, Unchanged, Kept, Refused int
	// Deleted counts the rows soft-deleted in Tinkerbell: skipped.
	Deleted int
	// DeletedImported counts templates soft-deleted in Tinkerbell but used
	// by a live workflow, imported deleted (templates only).
	DeletedImported int
}

// Problem is a record refused or kept, with the reason.
type Problem struct {
	Kind   string // hardware, template, workflow
	ID     string
	Name   string // a template's name
	Reason string
}

func (p Problem) String() string {
	if p.Name != "" {
		return fmt.Sprintf("%s %s (%q): %s", p.Kind, p.ID, p.Name, p.Reason)
	}
	return fmt.Sprintf("%s %s: %s", p.Kind, p.ID, p.Reason)
}

// Report is what an import did (or, dry, would do).
type Report struct {
	DryRun                         bool
	Hardware, Templates, Workflows Tally
	// Events and DataVersions count what was written for workflows;
	// PrunedData the data versions Tinkerbell had emptied (not imported).
	Events, DataVersions, PrunedData int
	Refused, Kept                    []Problem
}

// Run imports the Tinkerbell v0.6 database at from (a lib/pq URL) into
// dst. It returns an error when the import could not run or had to stop
// (then nothing is written); records herd refuses are in the report.
func Run(ctx context.Context, from string, dst *store.Store, opt Options) (*Report, error) {
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	if opt.Every <= 0 {
		opt.Every = 1000
	}
	db, err := sql.Open("postgres", from)
	if err != nil {
		return nil, fmt.Errorf("tinkerbell database %s: %w", Describe(from), err)
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("connect to the tinkerbell database %s: %w", Describe(from), err)
	}
	src, err := openSource(ctx, db)
	if err != nil {
		return nil, err
	}
	defer src.close()
	if err := src.checkSchema(ctx); err != nil {
		return nil, err
	}
	c, err := src.census(ctx)
	if err != nil {
		return nil, err
	}
	r := &run{src: src, opt: opt, rep: &Report{DryRun: opt.DryRun}, templates: map[string]*templateSeen{}, census: c}
	r.rep.Hardware.Deleted, r.rep.Templates.Deleted, r.rep.Workflows.Deleted = c.deletedHardware, c.deletedTemplates, c.deletedWorkflows

	fmt.Fprintf(opt.Out, "herd import tink: from %s (Tinkerbell v0.6)\n", Describe(from))
	if opt.DryRun {
		fmt.Fprintln(opt.Out, "dry run: nothing is written; this is what an import would do now")
	}
	fmt.Fprintf(opt.Out, "found %s, %s and %s; soft-deleted (skipped): %d, %d and %d\n",
		Plural(c.hardware, "hardware record"), Plural(c.templates, "template"), Plural(c.workflows, "workflow"),
		c.deletedHardware, c.deletedTemplates, c.deletedWorkflows)
	if c.hardwareWithoutID > 0 {
		r.refuse(Problem{Kind: "hardware", ID: "(no id)", Reason: fmt.Sprintf("%d live rows have a NULL id; herd needs the record's UUID", c.hardwareWithoutID)}, &r.rep.Hardware)
		r.rep.Hardware.Refused += c.hardwareWithoutID - 1
	}

	err = dst.Import(ctx, store.ImportOptions{DryRun: opt.DryRun, Replace: opt.Replace}, func(im *store.ImportTx) error {
		r.im = im
		if err := r.hardware(ctx); err != nil {
			return err
		}
		if err := r.allTemplates(ctx); err != nil {
			return err
		}
		return r.workflows(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("import stopped, nothing was written: %w", err)
	}
	r.rep.write(opt.Out)
	return r.rep, nil
}

// Describe names a database URL for messages, without its password.
func Describe(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "(the --from database)"
	}
	return u.Redacted()
}

// run is one Run's state.
type run struct {
	src       *source
	im        *store.ImportTx
	opt       Options
	rep       *Report
	templates map[string]*templateSeen // by id, as imported (or refused)
	census    census
	done      int // records handled, for the progress lines
}

// templateSeen is a template the workflows may need.
type templateSeen struct {
	data    string
	refused bool
}

// step counts a record done and prints a progress line every opt.Every.
func (r *run) step(kind string, n, of int) {
	r.done++
	if r.done%r.opt.Every == 0 {
		c := r.census
		fmt.Fprintf(r.opt.Out, "progress: %d of %d records (%s %d of %d)\n", r.done, c.hardware+c.templates+c.workflows, kind, n, of)
	}
}

func (r *run) refuse(p Problem, t *Tally) {
	t.Refused++
	r.rep.Refused = append(r.rep.Refused, p)
	if r.opt.Verbose {
		fmt.Fprintf(r.opt.Out, "refused %s\n", p)
	}
}

// outcome tallies a store result, or sorts its error into refused (the
// record) or fatal (the import).
func (r *run) outcome(p Problem, t *Tally, res store.ImportResult, err error) (bool, error) {
	if err != nil {
		if !store.IsRefusal(err) {
			return false, err
		}
		p.Reason = err.Error()
		r.refuse(p, t)
		return false, nil
	}
	switch res.Outcome {
	case store.ImportCreated:
		t.Created++
	case store.ImportUpdated:
		t.Updated++
	case store.ImportUnchanged:
		t.Unchanged++
	case store.ImportKept:
		t.Kept++
		p.Reason = res.Note
		r.rep.Kept = append(r.rep.Kept, p)
	}
	r.rep.Events += res.Events
	r.rep.DataVersions += res.DataVersions
	if r.opt.Verbose {
		line := fmt.Sprintf("%s %s", p.Kind, p.ID)
		if p.Name != "" {
			line += fmt.Sprintf(" (%q)", p.Name)
		}
		line += ": " + res.Outcome.String()
		if res.Note != "" {
			line += ": " + res.Note
		}
		fmt.Fprintln(r.opt.Out, line)
	}
	return true, nil
}

func (r *run) hardware(ctx context.Context) error {
	n, last := 0, ""
	for {
		page, err := r.src.hardwarePage(ctx, last, pageSize)
		if err != nil {
			return err
		}
		for _, row := range page {
			n++
			p := Problem{Kind: "hardware", ID: row.id}
			if hw, err := convertHardware(row); err != nil {
				p.Reason = err.Error()
				r.refuse(p, &r.rep.Hardware)
			} else {
				res, err := r.im.Hardware(ctx, hw, row.insertedAt)
				if _, err := r.outcome(p, &r.rep.Hardware, res, err); err != nil {
					return err
				}
			}
			r.step("hardware", n, r.census.hardware)
		}
		if len(page) < pageSize {
			return nil
		}
		last = page[len(page)-1].id
	}
}

func (r *run) allTemplates(ctx context.Context) error {
	n, last := 0, ""
	for {
		page, err := r.src.templatePage(ctx, last, pageSize)
		if err != nil {
			return err
		}
		for _, row := range page {
			n++
			if err := r.template(ctx, row); err != nil {
				return err
			}
			r.step("templates", n, r.census.templates)
		}
		if len(page) < pageSize {
			return nil
		}
		last = page[len(page)-1].id
	}
}

// template imports one template (live, or deleted and wanted by a live
// workflow) and remembers it for the workflows.
func (r *run) template(ctx context.Context, row templateRow) error {
	seen := &templateSeen{data: string(row.data)}
	r.templates[row.id] = seen
	p := Problem{Kind: "template", ID: row.id, Name: row.name}
	t, err := convertTemplate(row)
	if err != nil {
		if !row.deleted.IsZero() {
			err = fmt.Errorf("deleted in Tinkerbell but used by a live workflow: %w", err)
		}
		seen.refused = true
		p.Reason = err.Error()
		r.refuse(p, &r.rep.Templates)
		return nil
	}
	res, err := r.im.Template(ctx, t)
	ok, err := r.outcome(p, &r.rep.Templates, res, err)
	if err != nil {
		return err
	}
	if !ok {
		seen.refused = true
		return nil
	}
	if !row.deleted.IsZero() && res.Outcome == store.ImportCreated {
		r.rep.Templates.Created--
		r.rep.Templates.DeletedImported++
	}
	return nil
}

// templateFor returns the YAML of a workflow's template, importing a
// template deleted in Tinkerbell on first use; "" with the reason when the
// workflow cannot have it.
func (r *run) templateFor(ctx context.Context, id string) (data, reason string, err error) {
	seen, ok := r.templates[id]
	if !ok {
		row, err := r.src.template(ctx, id)
		if err != nil {
			return "", "", err
		}
		if row == nil {
			return "", fmt.Sprintf("its template %s is not in the Tinkerbell database", id), nil
		}
		if err := r.template(ctx, *row); err != nil {
			return "", "", err
		}
		seen = r.templates[id]
	}
	if seen.refused {
		return "", fmt.Sprintf("its template %s was refused (listed above)", id), nil
	}
	return seen.data, "", nil
}

func (r *run) workflows(ctx context.Context) error {
	n, last := 0, ""
	for {
		page, err := r.src.workflowPage(ctx, last, pageSize)
		if err != nil {
			return err
		}
		for _, row := range page {
			n++
			if err := r.workflow(ctx, row); err != nil {
				return err
			}
			r.step("workflows", n, r.census.workflows)
		}
		if len(page) < pageSize {
			return nil
		}
		last = page[len(page)-1].id
	}
}

func (r *run) workflow(ctx context.Context, row *workflowRow) error {
	p := Problem{Kind: "workflow", ID: row.id}
	data, reason, err := r.templateFor(ctx, row.template)
	if err != nil {
		return err
	}
	if reason != "" {
		p.Reason = reason
		r.refuse(p, &r.rep.Workflows)
		return nil
	}
	w, pruned, err := convertWorkflow(row, data)
	if err != nil {
		p.Reason = err.Error()
		r.refuse(p, &r.rep.Workflows)
		return nil
	}
	res, err := r.im.Workflow(ctx, w)
	ok, err := r.outcome(p, &r.rep.Workflows, res, err)
	if ok {
		r.rep.PrunedData += pruned
	}
	return err
}

// write prints the refused and kept records and the summary.
func (rep *Report) write(out io.Writer) {
	if len(rep.Refused) > 0 {
		fmt.Fprintln(out, "refused (not imported; fix them in Tinkerbell's database, or in herd, and import again):")
		for _, p := range rep.Refused {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
	if len(rep.Kept) > 0 {
		fmt.Fprintln(out, "kept (herd has them with other content; herd's copies stay):")
		for _, p := range rep.Kept {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
	verb := "imported"
	if rep.DryRun {
		verb = "would import"
	}
	fmt.Fprintf(out, "summary (%s):\n", verb)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tcreated\tupdated\tunchanged\tkept\trefused\tsoft-deleted, skipped\t")
	for _, k := range []struct {
		name string
		t    Tally
	}{{"hardware", rep.Hardware}, {"templates", rep.Templates}, {"workflows", rep.Workflows}} {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", k.name, k.t.Created, k.t.Updated, k.t.Unchanged, k.t.Kept, k.t.Refused, k.t.Deleted)
	}
	tw.Flush()
	written := "written"
	if rep.DryRun {
		written = "to write"
	}
	fmt.Fprintf(out, "  workflow events %s: %d; data versions %s: %d\n", written, rep.Events, written, rep.DataVersions)
	if rep.PrunedData > 0 {
		fmt.Fprintf(out, "  data versions Tinkerbell had emptied (it keeps the data of its newest 3), not imported: %d\n", rep.PrunedData)
	}
	if n := rep.Templates.DeletedImported; n > 0 {
		fmt.Fprintf(out, "  templates deleted in Tinkerbell but used by live workflows, imported deleted: %d\n", n)
	}
	switch {
	case rep.DryRun:
		fmt.Fprintln(out, "dry run: nothing was written")
	case rep.changed() == 0:
		fmt.Fprintln(out, "nothing written: herd already has every record it takes (unchanged)")
	default:
		fmt.Fprintf(out, "committed: %s written\n", Plural(rep.changed(), "record"))
	}
}

// Plural is "1 record", "2 records".
func Plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// RefusedRecords counts the records refused.
func (rep *Report) RefusedRecords() int {
	return rep.Hardware.Refused + rep.Templates.Refused + rep.Workflows.Refused
}

// changed counts the records written.
func (rep *Report) changed() int {
	n := 0
	for _, t := range []Tally{rep.Hardware, rep.Templates, rep.Workflows} {
		n += t.Created + t.Updated + t.DeletedImported
	}
	return n
}
