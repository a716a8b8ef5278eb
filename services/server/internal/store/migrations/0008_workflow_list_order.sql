-- ListWorkflows pages through the live workflows in creation order; with
-- no index each page sorted the whole table (10,000 workflows: 100 pages,
-- 600 ms). The same order serves "this machine's latest workflow".
CREATE INDEX workflow_live_order ON workflow (created_at, id) WHERE deleted_at IS NULL;
