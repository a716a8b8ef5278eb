-- The generation of a hardware record's worker credentials, bound into each
-- credential the server issues for the machine (pkg/workertoken). Every
-- record created takes a new one from the sequence and pushes that replace
-- the record keep it, so deleting a record revokes its credentials and
-- pushing the same id again does not bring them back.
CREATE SEQUENCE hardware_credential_generation;
ALTER TABLE hardware ADD COLUMN credential_generation bigint NOT NULL DEFAULT nextval('hardware_credential_generation');
