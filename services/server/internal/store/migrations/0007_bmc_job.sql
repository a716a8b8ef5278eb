-- BMC jobs: what operators, workflows (--netboot) and the power poll ask
-- of a machine's BMC, run by herd-bmc. A job is PENDING until herd-bmc
-- takes it (taken_at), RUNNING while it tries, then SUCCESS, FAILED or
-- TIMEOUT; the server ends TIMEOUT any job still unfinished at its
-- deadline (herd-bmc gone, or a job taken and never reported).

-- bmc_key names the BMC a hardware record's bmc reaches, "ipmi
-- 10.0.0.5:623" (the port absent or 0: the protocol's). Jobs carry it so
-- that one BMC gets one job at a time, whichever herd-bmc takes them.
CREATE FUNCTION bmc_key(data jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT (data->'bmc'->>'protocol') || ' ' || (data->'bmc'->>'address') || ':' ||
		coalesce(nullif(nullif(data->'bmc'->>'port', ''), '0'),
			CASE data->'bmc'->>'protocol' WHEN 'ipmi' THEN '623' ELSE '443' END)
$$;

CREATE TABLE bmc_job (
	id          uuid PRIMARY KEY,
	hardware_id uuid NOT NULL REFERENCES hardware (id) ON DELETE CASCADE,
	bmc_key     text NOT NULL,
	kind        text NOT NULL CHECK (kind IN ('power-status', 'power', 'bootdev', 'netboot')),
	action      text NOT NULL DEFAULT '',
	persistent  boolean NOT NULL DEFAULT false,
	efi         boolean NOT NULL DEFAULT false,
	origin      text NOT NULL CHECK (origin IN ('operator', 'workflow', 'poll')),
	workflow_id uuid REFERENCES workflow (id) ON DELETE SET NULL,
	state       text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'RUNNING', 'SUCCESS', 'FAILED', 'TIMEOUT')),
	attempts    jsonb NOT NULL DEFAULT '[]',
	answer      text NOT NULL DEFAULT '',
	message     text NOT NULL DEFAULT '',
	agent       text NOT NULL DEFAULT '',
	taken_at    timestamptz,
	deadline    timestamptz NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now(),
	updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bmc_job_waiting ON bmc_job (created_at) WHERE state = 'PENDING' AND taken_at IS NULL;
CREATE INDEX bmc_job_unfinished ON bmc_job (deadline) WHERE state IN ('PENDING', 'RUNNING');
CREATE INDEX bmc_job_hardware ON bmc_job (hardware_id, created_at DESC);
CREATE INDEX bmc_job_busy ON bmc_job (bmc_key) WHERE taken_at IS NOT NULL AND state IN ('PENDING', 'RUNNING');

-- The power state herd-server last learned from a machine's BMC (a
-- status job's answer), or why it could not.
ALTER TABLE hardware
	ADD COLUMN power_state text NOT NULL DEFAULT '',
	ADD COLUMN power_checked_at timestamptz,
	ADD COLUMN power_error text NOT NULL DEFAULT '';
