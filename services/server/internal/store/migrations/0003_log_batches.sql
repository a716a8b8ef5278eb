-- Batches of action output already stored (ActionLogs.batch_id), so a
-- worker's retry after a lost reply stores nothing twice.
CREATE TABLE workflow_log_batch (
	workflow_id uuid NOT NULL REFERENCES workflow (id) ON DELETE CASCADE,
	batch_id    text NOT NULL,
	PRIMARY KEY (workflow_id, batch_id)
);
