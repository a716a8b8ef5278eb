-- BMC credentials, sealed by herd-server (internal/keyring) before they
-- reach the database: key_id names the key that sealed, so keys rotate
-- row by row. A hardware record's bmc.credential names one of these; the
-- foreign key refuses a record naming a credential that is not stored and
-- the deletion of a credential a record uses.
CREATE TABLE bmc_credential (
	name text PRIMARY KEY,
	key_id text NOT NULL,
	sealed bytea NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE hardware ADD COLUMN bmc_credential text REFERENCES bmc_credential (name) ON DELETE RESTRICT;
CREATE INDEX hardware_bmc_credential ON hardware (bmc_credential) WHERE bmc_credential IS NOT NULL;
