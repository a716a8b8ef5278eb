-- herd's state. Applied in order by store.Migrate; never edit a released
-- migration, add the next one.

CREATE TABLE hardware (
	id         uuid PRIMARY KEY,
	-- The record in Tinkerbell's hardware JSON format, as validated by
	-- pkg/spec (metadata as a JSON object, not a string). jsonb, so
	-- operators can query it (data @> '{...}'); object keys come back in
	-- jsonb's order, not the pushed one. The version is in its column, not
	-- in the JSON.
	data       jsonb NOT NULL,
	version    bigint NOT NULL DEFAULT 1,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every MAC and IP a record claims. The primary key makes two records
-- claiming the same address impossible, whatever the JSON holds.
CREATE TABLE hardware_address (
	kind        text NOT NULL CHECK (kind IN ('mac', 'ip')),
	value       text NOT NULL,
	hardware_id uuid NOT NULL REFERENCES hardware (id) ON DELETE CASCADE,
	PRIMARY KEY (kind, value)
);
CREATE INDEX hardware_address_hardware ON hardware_address (hardware_id);

CREATE TABLE template (
	id         uuid PRIMARY KEY,
	name       text NOT NULL,
	data       text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	deleted_at timestamptz
);
-- Names are unique among live templates; a deleted name can be reused.
CREATE UNIQUE INDEX template_name ON template (name) WHERE deleted_at IS NULL;

CREATE TABLE workflow (
	id            uuid PRIMARY KEY,
	template_id   uuid NOT NULL REFERENCES template (id),
	-- {"device_1": "08:00:27:..."} as given at creation.
	hardware_map  jsonb NOT NULL,
	-- The template rendered for this workflow (YAML).
	rendered      text NOT NULL,
	-- []WorkflowAction in protojson, in execution order.
	actions       jsonb NOT NULL,
	global_timeout integer NOT NULL DEFAULT 0,
	-- Engine status (services/server/internal/engine): workflow state, the
	-- current action and its state, and the deadlines the server enforces.
	state         smallint NOT NULL DEFAULT 0,
	current_index integer NOT NULL DEFAULT 0,
	current_state smallint NOT NULL DEFAULT 0,
	started_at    timestamptz,
	action_started_at timestamptz,
	-- Earliest of the action and global deadlines while running.
	deadline      timestamptz,
	created_at    timestamptz NOT NULL DEFAULT now(),
	updated_at    timestamptz NOT NULL DEFAULT now(),
	deleted_at    timestamptz
);
CREATE INDEX workflow_deadline ON workflow (deadline) WHERE deadline IS NOT NULL AND deleted_at IS NULL;

-- Which machines (hardware ids) take part in a workflow.
CREATE TABLE workflow_worker (
	workflow_id uuid NOT NULL REFERENCES workflow (id) ON DELETE CASCADE,
	worker_id   uuid NOT NULL,
	PRIMARY KEY (worker_id, workflow_id)
);

-- Every accepted action report and every server decision (timeouts).
CREATE TABLE workflow_event (
	id           bigserial PRIMARY KEY,
	workflow_id  uuid NOT NULL REFERENCES workflow (id) ON DELETE CASCADE,
	worker_id    text NOT NULL,
	task_name    text NOT NULL,
	action_name  text NOT NULL,
	action_index integer NOT NULL,
	state        smallint NOT NULL,
	seconds      bigint NOT NULL DEFAULT 0,
	message      text NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_event_workflow ON workflow_event (workflow_id, id);

-- Versioned workflow data; the store keeps a bounded history.
CREATE TABLE workflow_data (
	workflow_id uuid NOT NULL REFERENCES workflow (id) ON DELETE CASCADE,
	version     integer NOT NULL,
	data        jsonb NOT NULL,
	metadata    jsonb NOT NULL DEFAULT '{}',
	created_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (workflow_id, version)
);
