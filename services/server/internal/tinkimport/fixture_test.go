package tinkimport

// A Tinkerbell v0.6 database for the tests: the schema v0.6.0's migrations
// leave (written here from its column list, not copied), filled the way
// tink-server fills it.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/pgtest"
)

// v06Schema is the shape of a v0.6.0 database after all its migrations
// (the events table and its triggers are gone by then).
const v06Schema = `
CREATE TABLE hardware (
	id          uuid UNIQUE,
	inserted_at timestamptz,
	deleted_at  timestamptz,
	data        jsonb
);
CREATE TABLE template (
	id         uuid UNIQUE NOT NULL,
	name       varchar(200) NOT NULL CHECK (name ~ '^[a-zA-Z0-9_-]*$'),
	created_at timestamptz,
	updated_at timestamptz,
	deleted_at timestamptz,
	data       bytea
);
CREATE UNIQUE INDEX template_live_name ON template (name) WHERE deleted_at IS NULL;
CREATE TABLE workflow (
	id         uuid UNIQUE NOT NULL,
	template   uuid NOT NULL,
	devices    jsonb NOT NULL,
	created_at timestamptz,
	updated_at timestamptz,
	deleted_at timestamptz
);
CREATE TABLE workflow_state (
	workflow_id             uuid UNIQUE NOT NULL,
	current_task_name       varchar(200),
	current_action_name     varchar(200),
	current_action_state    smallint,
	current_worker          varchar(200),
	action_list             jsonb,
	current_action_index    int,
	total_number_of_actions int
);
CREATE TABLE workflow_event (
	workflow_id    uuid NOT NULL,
	worker_id      uuid NOT NULL,
	task_name      varchar(200),
	action_name    varchar(200),
	execution_time int,
	message        varchar(200),
	status         smallint,
	created_at     timestamptz
);
CREATE TABLE workflow_worker_map (
	workflow_id uuid NOT NULL,
	worker_id   uuid NOT NULL
);
CREATE UNIQUE INDEX workflow_worker_pair ON workflow_worker_map (workflow_id, worker_id);
CREATE TABLE workflow_data (
	workflow_id uuid NOT NULL,
	version     int,
	metadata    jsonb,
	data        jsonb
);`

// tinkDB is a v0.6 database being filled.
type tinkDB struct {
	t   *testing.T
	db  *sql.DB
	url string
}

func newTinkDB(t *testing.T) *tinkDB {
	t.Helper()
	url := pgtest.NewDatabase(t)
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(v06Schema); err != nil {
		t.Fatalf("v0.6 schema: %v", err)
	}
	return &tinkDB{t: t, db: db, url: url}
}

func (d *tinkDB) exec(query string, args ...any) {
	d.t.Helper()
	if _, err := d.db.ExecContext(context.Background(), query, args...); err != nil {
		d.t.Fatalf("%s: %v", query, err)
	}
}

// The records' ids, by kind and number.
func hwID(i int) string  { return fmt.Sprintf("0a000000-0000-4000-8000-%012d", i) }
func tplID(i int) string { return fmt.Sprintf("0b000000-0000-4000-8000-%012d", i) }
func wfID(i int) string  { return fmt.Sprintf("0c000000-0000-4000-8000-%012d", i) }
func mac(i int) string   { return fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256) }
func ip(i int) string    { return fmt.Sprintf("10.10.%d.%d", i/250, i%250+1) }

// v06Hardware is the JSON tink-server stored: encoding/json over the
// generated Go structs (metadata a string, empty fields left out).
type (
	v06Hardware struct {
		Network  v06Network `json:"network"`
		ID       string     `json:"id,omitempty"`
		Metadata string     `json:"metadata,omitempty"`
	}
	v06Network struct {
		Interfaces []v06Interface `json:"interfaces"`
	}
	v06Interface struct {
		DHCP    v06DHCP    `json:"dhcp"`
		Netboot v06Netboot `json:"netboot"`
	}
	v06DHCP struct {
		MAC         string   `json:"mac,omitempty"`
		Hostname    string   `json:"hostname,omitempty"`
		LeaseTime   int64    `json:"lease_time,omitempty"`
		NameServers []string `json:"name_servers,omitempty"`
		TimeServers []string `json:"time_servers,omitempty"`
		Arch        string   `json:"arch,omitempty"`
		UEFI        bool     `json:"uefi,omitempty"`
		IP          v06IP    `json:"ip"`
	}
	v06IP struct {
		Address string `json:"address,omitempty"`
		Netmask string `json:"netmask,omitempty"`
		Gateway string `json:"gateway,omitempty"`
	}
	v06Netboot struct {
		AllowPXE      bool `json:"allow_pxe,omitempty"`
		AllowWorkflow bool `json:"allow_workflow,omitempty"`
	}
	v06Action struct {
		TaskName    string   `json:"task_name,omitempty"`
		Name        string   `json:"name,omitempty"`
		Image       string   `json:"image,omitempty"`
		Timeout     int64    `json:"timeout,omitempty"`
		WorkerID    string   `json:"worker_id,omitempty"`
		Volumes     []string `json:"volumes,omitempty"`
		Environment []string `json:"environment,omitempty"`
	}
)

func hardwareJSON(id, mac, ip string, timeServers ...string) string {
	hw := v06Hardware{ID: id, Metadata: fmt.Sprintf(`{"instance":{"hostname":"node-%s"},"facility":{"facility_code":"onprem"}}`, mac[12:14]+mac[15:]),
		Network: v06Network{Interfaces: []v06Interface{{
			DHCP: v06DHCP{MAC: mac, Hostname: "node", LeaseTime: 86400, NameServers: []string{"1.1.1.1"}, TimeServers: timeServers,
				Arch: "x86_64", IP: v06IP{Address: ip, Netmask: "255.255.0.0", Gateway: "10.10.255.254"}},
			Netboot: v06Netboot{AllowPXE: true, AllowWorkflow: true},
		}}}}
	b, _ := json.Marshal(hw)
	return string(b)
}

func (d *tinkDB) hardware(id, data string, at time.Time, deleted bool) {
	d.t.Helper()
	var del any
	if deleted {
		del = at.Add(time.Hour)
	}
	d.exec(`INSERT INTO hardware (id, inserted_at, deleted_at, data) VALUES ($1, $2, $3, $4)`, id, at, del, data)
}

// templateYAML is a three-action template for one machine.
func templateYAML(name string, volume string) string {
	return fmt.Sprintf(`version: "0.1"
name: %s
global_timeout: 6000
tasks:
  - name: "os-installation"
    worker: "{{.device_1}}"
    volumes:
      - %s
    environment:
      HOST: "{{.device_1}}"
    actions:
      - name: "disk-wipe"
        image: quay.io/tinkerbell-actions/disk-wipe:v1
        timeout: 90
      - name: "install"
        image: quay.io/tinkerbell-actions/image2disk:v1
        timeout: 600
      - name: "reboot"
        image: quay.io/tinkerbell-actions/reboot:v1
        timeout: 90
`, name, volume)
}

// actionNames are the template's actions, in order.
var actionNames = []string{"disk-wipe", "install", "reboot"}

func actionListJSON(worker string) string {
	var list []v06Action
	for i, n := range actionNames {
		list = append(list, v06Action{TaskName: "os-installation", Name: n, Image: "quay.io/tinkerbell-actions/" + n + ":v1",
			Timeout: []int64{90, 600, 90}[i], WorkerID: worker, Volumes: []string{"/dev:/dev"}, Environment: []string{"HOST=x"}})
	}
	b, _ := json.Marshal(list)
	return string(b)
}

func (d *tinkDB) template(id, name, yaml string, at time.Time, deleted bool) {
	d.t.Helper()
	var del any
	if deleted {
		del = at.Add(time.Hour)
	}
	d.exec(`INSERT INTO template (id, name, created_at, updated_at, deleted_at, data) VALUES ($1, $2, $3, $3, $4, $5)`,
		id, name, at, del, []byte(yaml))
}

// v06Step is one report a worker made, as workflow_event and
// workflow_state record it.
type v06Step struct {
	action int
	state  int // 1 RUNNING, 2 FAILED, 3 TIMEOUT, 4 SUCCESS
}

// runTo is the list of reports that leaves a three-action workflow in a
// given state.
func runTo(state string) []v06Step {
	switch state {
	case "pending":
		return nil
	case "running": // the second action running
		return []v06Step{{0, 1}, {0, 4}, {1, 1}}
	case "between": // the first action succeeded, the second not started
		return []v06Step{{0, 1}, {0, 4}}
	case "failed":
		return []v06Step{{0, 1}, {0, 4}, {1, 1}, {1, 2}}
	case "timeout":
		return []v06Step{{0, 1}, {0, 3}}
	case "success":
		return []v06Step{{0, 1}, {0, 4}, {1, 1}, {1, 4}, {2, 1}, {2, 4}}
	}
	panic(state)
}

// workflow inserts a workflow as tink-server would have, with its state
// after steps, their events, the worker map and data versions (the last
// keep of them with data, as v0.6's MAX_WORKFLOW_DATA_VERSIONS does).
func (d *tinkDB) workflow(id, template, worker, mac string, at time.Time, steps []v06Step, versions, keep int, deleted bool) {
	d.t.Helper()
	var del any
	if deleted {
		del = at.Add(time.Hour)
	}
	d.exec(`INSERT INTO workflow (id, template, devices, created_at, updated_at, deleted_at) VALUES ($1, $2, $3, $4, $4, $5)`,
		id, template, fmt.Sprintf(`{"device_1": %q}`, mac), at, del)
	d.exec(`INSERT INTO workflow_worker_map (workflow_id, worker_id) VALUES ($1, $2)`, id, worker)
	index, state := 0, 0
	for i, s := range steps {
		index, state = s.action, s.state
		d.exec(`INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, execution_time, message, status, created_at)
			VALUES ($1, $2, 'os-installation', $3, $4, $5, $6, $7)`,
			id, worker, actionNames[s.action], i, fmt.Sprintf("step %d", i), s.state, at.Add(time.Duration(i+1)*time.Second))
	}
	if !deleted { // v0.6's DeleteWorkflow removes the state row
		d.exec(`INSERT INTO workflow_state (workflow_id, current_task_name, current_action_name, current_action_state, current_worker,
			action_list, current_action_index, total_number_of_actions) VALUES ($1, 'os-installation', $2, $3, $4, $5, $6, 3)`,
			id, actionNames[index], state, worker, actionListJSON(worker), index)
	}
	for v := 1; v <= versions; v++ {
		var data any = fmt.Sprintf(`{"step": %d, "workflow": %q}`, v, id)
		if v <= versions-keep {
			data = nil
		}
		d.exec(`INSERT INTO workflow_data (workflow_id, version, metadata, data) VALUES ($1, $2, $3, $4)`,
			id, v, fmt.Sprintf(`{"worker": %q, "version": %d}`, worker, v), data)
	}
}
