package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/herd-metal/herd/proto/template"
)

func TestTemplateCRUD(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)

	id, err := s.CreateTemplate(ctx, "ubuntu", "data v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range [][2]string{{id, ""}, {"", "ubuntu"}, {id, "ubuntu"}} {
		got, err := s.GetTemplate(ctx, key[0], key[1])
		if err != nil {
			t.Fatalf("GetTemplate%q: %v", key, err)
		}
		if got.Id != id || got.Name != "ubuntu" || got.Data != "data v1" || got.CreatedAt == nil || got.UpdatedAt == nil || got.DeletedAt != nil {
			t.Errorf("GetTemplate%q = %v", key, got)
		}
	}
	_, err = s.GetTemplate(ctx, id, "debian")
	wantErr(t, err, ErrNotFound)
	_, err = s.GetTemplate(ctx, "", "")
	wantErr(t, err, ErrInvalid)
	_, err = s.GetTemplate(ctx, "nope", "")
	wantErr(t, err, ErrInvalid)
	_, err = s.GetTemplate(ctx, uuid.NewString(), "")
	wantErr(t, err, ErrNotFound)
	_, err = s.CreateTemplate(ctx, "", "x")
	wantErr(t, err, ErrInvalid)

	// A live name is taken; the error names its owner.
	_, err = s.CreateTemplate(ctx, "ubuntu", "other")
	wantErr(t, err, ErrConflict, `"ubuntu"`, id)
	other, err := s.CreateTemplate(ctx, "debian", "d")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.UpdateTemplate(ctx, other, "ubuntu", "", nil), ErrConflict, id)

	// Update data only, then name only.
	if err := s.UpdateTemplate(ctx, id, "", "data v2", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateTemplate(ctx, id, "ubuntu-22", "", nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTemplate(ctx, id, "")
	if err != nil || got.Name != "ubuntu-22" || got.Data != "data v2" {
		t.Fatalf("after updates: %v %v", got, err)
	}
	if !got.UpdatedAt.AsTime().After(got.CreatedAt.AsTime()) {
		t.Errorf("updated_at %v not after created_at %v", got.UpdatedAt.AsTime(), got.CreatedAt.AsTime())
	}
	wantErr(t, s.UpdateTemplate(ctx, id, "", "", nil), ErrInvalid)

	// An update made from the copy read is saved; one from an older copy
	// (someone saved in between) is refused and changes nothing.
	read := got.UpdatedAt.AsTime()
	if err := s.UpdateTemplate(ctx, id, "", "data v3", &read); err != nil {
		t.Fatalf("update from the current copy: %v", err)
	}
	wantErr(t, s.UpdateTemplate(ctx, id, "", "data v3 from a stale copy", &read), ErrPrecondition, "changed at", "read it again")
	if now, err := s.GetTemplate(ctx, id, ""); err != nil || now.Data != "data v3" {
		t.Fatalf("after a stale update: %v %v, want data v3 kept", now, err)
	}
	wantErr(t, s.UpdateTemplate(ctx, uuid.NewString(), "", "x", &read), ErrNotFound)
	wantErr(t, s.UpdateTemplate(ctx, uuid.NewString(), "x", "", nil), ErrNotFound)

	// Delete: gone for reads and updates, its name free again.
	if err := s.DeleteTemplate(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetTemplate(ctx, id, "")
	wantErr(t, err, ErrNotFound)
	_, err = s.GetTemplate(ctx, "", "ubuntu-22")
	wantErr(t, err, ErrNotFound)
	wantErr(t, s.DeleteTemplate(ctx, id), ErrNotFound)
	wantErr(t, s.UpdateTemplate(ctx, id, "", "x", nil), ErrNotFound)
	reused, err := s.CreateTemplate(ctx, "ubuntu-22", "new")
	if err != nil {
		t.Fatalf("name of a deleted template: %v", err)
	}
	if reused == id {
		t.Error("new template got the deleted one's id")
	}
	if err := s.UpdateTemplate(ctx, other, "ubuntu", "", nil); err != nil {
		t.Fatalf("rename to a deleted template's old name: %v", err)
	}
}

func listNames(t *testing.T, s *Store, pattern string) []string {
	t.Helper()
	var names []string
	err := s.ListTemplates(context.Background(), pattern, func(w *template.WorkflowTemplate) error {
		names = append(names, w.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestListTemplates: the name filter is Tinkerbell v0.6's (ILIKE with *
// as %), and the items carry no data, as v0.6's.
func TestListTemplates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	for _, n := range []string{"hello-world", "hello_fail", "Hello-Fair", "hello_failure", "debian",
		"a_b", "axb", "100%", "1000", "rocky/9", `back\slash`, `ends\`, "ubuntu-22", "ubuntu-24", "gone"} {
		id, err := s.CreateTemplate(ctx, n, "version: \"0.1\"\nname: "+n+"\n")
		if err != nil {
			t.Fatal(err)
		}
		if n == "gone" {
			if err := s.DeleteTemplate(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	const all = `[100% 1000 Hello-Fair a_b axb back\slash debian ends\ hello-world hello_fail hello_failure rocky/9 ubuntu-22 ubuntu-24]`
	for _, tc := range []struct {
		pattern string
		want    string
	}{
		{"", all},
		{"*", all},
		{"%", all},
		{"HELLO*", "[Hello-Fair hello-world hello_fail hello_failure]"}, // case-insensitive
		{"hello%", "[Hello-Fair hello-world hello_fail hello_failure]"}, // % is a wildcard
		{"hello_fai_", "[Hello-Fair hello_fail]"},                       // _ is one character
		{`hello\_fai_`, "[hello_fail]"},                                 // a backslash escapes
		{"HELLO-WORLD", "[hello-world]"},
		{"a_b", "[a_b axb]"},
		{`a\_b`, "[a_b]"},
		{"100%", "[100% 1000]"},
		{`100\%`, "[100%]"},
		{"*/*", "[rocky/9]"}, // * crosses /
		{"ubuntu-2?", "[]"},  // ? is no wildcard in v0.6
		{`back\\slash`, `[back\slash]`},
		{`*\`, `[ends\]`}, // a lone trailing backslash is literal (v0.6: an SQL error)
		{"gone", "[]"},
		{"nothing*", "[]"},
	} {
		if got := fmt.Sprint(listNames(t, s, tc.pattern)); got != tc.want {
			t.Errorf("ListTemplates(%q) = %s, want %s", tc.pattern, got, tc.want)
		}
	}
	err := s.ListTemplates(ctx, "hello-world", func(w *template.WorkflowTemplate) error {
		if w.Id == "" || w.Name != "hello-world" || w.CreatedAt == nil || w.UpdatedAt == nil || w.Data != "" || w.DeletedAt != nil {
			t.Errorf("listed %v, want id, name and times only", w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	if err := s.ListTemplates(ctx, "*", func(*template.WorkflowTemplate) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("callback error: %v", err)
	}
}

func TestListTemplatesPages(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	total := templatePage*2 + 3
	if _, err := s.db.Exec(`INSERT INTO template (id, name, data)
		SELECT gen_random_uuid(), 't-' || lpad(i::text, 4, '0'), 'd' FROM generate_series(1, $1) i`, total); err != nil {
		t.Fatal(err)
	}
	names := listNames(t, s, "t-*")
	if len(names) != total {
		t.Fatalf("%d templates listed, want %d", len(names), total)
	}
	for i, n := range names {
		if want := fmt.Sprintf("t-%04d", i+1); n != want {
			t.Fatalf("name %d = %s, want %s", i, n, want)
		}
	}
}

func TestILikePattern(t *testing.T) {
	for name, want := range map[string]string{
		"":            "%",
		"*":           "%",
		"abc":         "abc",
		"HELLO*":      "HELLO%",
		"a*b?c":       "a%b?c",
		"a_b%c":       "a_b%c",
		`a\*b`:        `a\%b`, // as v0.6: the * is replaced first
		`a\\b`:        `a\\b`,
		`trailing\`:   `trailing\\`,
		`trailing\\`:  `trailing\\`,
		`trailing\\\`: `trailing\\\\`,
	} {
		if got := ilikePattern(name); got != want {
			t.Errorf("ilikePattern(%q) = %q, want %q", name, got, want)
		}
	}
}
