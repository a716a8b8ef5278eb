package store

import (
	"context"
	"testing"
)

// TestWorkflowDataResent: an update equal to the latest version (as jsonb:
// key order and spacing do not count) is a worker's resend after a lost
// answer; it stores nothing and is answered the latest version. Anything
// else, even a return to an older version's data, is a new version.
func TestWorkflowDataResent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	type update struct {
		meta, data string
		want       int32 // the version answered
	}
	for _, c := range []struct {
		name    string
		updates []update
	}{
		{"the same data twice", []update{
			{`{"by":"w"}`, `{"disk":"/dev/sda"}`, 1},
			{`{"by":"w"}`, `{"disk":"/dev/sda"}`, 1},
		}},
		{"the same as jsonb, written otherwise", []update{
			{`{"by":"w","n":1}`, `{"a":1,"b":[1,2]}`, 1},
			{`{ "n": 1, "by": "w" }`, `{"b": [1, 2], "a": 1}`, 1},
		}},
		{"no metadata is {}", []update{
			{``, `{}`, 1},
			{`{}`, `{}`, 1},
			{``, `{}`, 1},
		}},
		{"other data", []update{
			{`{"by":"w"}`, `{"step":1}`, 1},
			{`{"by":"w"}`, `{"step":2}`, 2},
		}},
		{"an older version's data, not the latest", []update{
			{`{"by":"w"}`, `{"step":1}`, 1},
			{`{"by":"w"}`, `{"step":2}`, 2},
			{`{"by":"w"}`, `{"step":1}`, 3},
		}},
		{"only the metadata differs", []update{
			{`{"by":"w","at":"10:00"}`, `{"step":1}`, 1},
			{`{"by":"w","at":"10:01"}`, `{"step":1}`, 2},
		}},
		{"a resend after other data", []update{
			{`{}`, `{"step":1}`, 1},
			{`{}`, `{"step":2}`, 2},
			{`{}`, `{"step":2}`, 2},
			{`{}`, `{"step":3}`, 3},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := f.create(t)
			for i, u := range c.updates {
				v, err := f.s.UpdateWorkflowData(ctx, id, []byte(u.meta), []byte(u.data))
				if err != nil || v != u.want {
					t.Fatalf("update %d (%s, %s): version %d, %v; want %d", i+1, u.meta, u.data, v, err, u.want)
				}
			}
			last := c.updates[len(c.updates)-1]
			var stored, latest int32
			if err := f.s.db.QueryRow(`SELECT count(*), coalesce(max(version), 0) FROM workflow_data WHERE workflow_id = $1`, id).
				Scan(&stored, &latest); err != nil {
				t.Fatal(err)
			}
			if stored != last.want || latest != last.want {
				t.Errorf("%d versions stored, the latest %d; want versions 1..%d", stored, latest, last.want)
			}
		})
	}
}

// TestWorkflowDataResentAtTheBound: a resend at the history bound drops no
// version, since it adds none; the next change drops the oldest.
func TestWorkflowDataResentAtTheBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	s, err := Open(ctx, f.url, Options{MaxDataVersions: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	id := f.create(t)
	kept := func() (versions string) { // as PostgreSQL writes an array: {1,2}
		t.Helper()
		if err := s.db.QueryRow(`SELECT coalesce(array_agg(version ORDER BY version)::text, '{}')
			FROM workflow_data WHERE workflow_id = $1`, id).Scan(&versions); err != nil {
			t.Fatal(err)
		}
		return versions
	}
	for _, u := range []struct {
		data string
		want int32
		kept string
	}{
		{`{"step":1}`, 1, "{1}"},
		{`{"step":2}`, 2, "{1,2}"},
		{`{"step":2}`, 2, "{1,2}"},
		{`{"step":3}`, 3, "{2,3}"},
	} {
		v, err := s.UpdateWorkflowData(ctx, id, nil, []byte(u.data))
		if err != nil || v != u.want {
			t.Fatalf("update %s: version %d, %v; want %d", u.data, v, err, u.want)
		}
		if got := kept(); got != u.kept {
			t.Errorf("after %s: versions %s kept, want %s", u.data, got, u.kept)
		}
	}
	// The comparison reads the data as jsonb: data PostgreSQL refuses is
	// still refused, not taken for a resend or an error of the server.
	_, err = s.UpdateWorkflowData(ctx, id, nil, []byte(`{"x":"\u0000"}`))
	wantErr(t, err, ErrInvalid, "refused by the database")
	if got := kept(); got != "{2,3}" {
		t.Errorf("after a refused update: versions %s kept, want {2,3}", got)
	}
}
