-- Output lines of action containers, sent by workers (ReportActionLogs).
CREATE TABLE workflow_log (
	id          bigserial PRIMARY KEY,
	workflow_id uuid NOT NULL REFERENCES workflow (id) ON DELETE CASCADE,
	task_name   text NOT NULL,
	action_name text NOT NULL,
	at          timestamptz NOT NULL,
	stream      text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'herd')),
	line        text NOT NULL
);
CREATE INDEX workflow_log_action ON workflow_log (workflow_id, task_name, action_name, id);

-- How many lines each action has stored and dropped, so the cap is checked
-- without counting rows.
CREATE TABLE workflow_log_count (
	workflow_id uuid NOT NULL REFERENCES workflow (id) ON DELETE CASCADE,
	task_name   text NOT NULL,
	action_name text NOT NULL,
	stored      integer NOT NULL DEFAULT 0,
	dropped     integer NOT NULL DEFAULT 0,
	PRIMARY KEY (workflow_id, task_name, action_name)
);
