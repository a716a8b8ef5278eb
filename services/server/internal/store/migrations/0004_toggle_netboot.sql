-- Whether the server switches the netboot of a workflow's machines itself
-- (Tinkerbell's toggleAllowNetboot): allow_pxe on at creation, off once the
-- workflow reaches SUCCESS. Workflows created before this migration did
-- not, and keep not doing it.
ALTER TABLE workflow ADD COLUMN toggle_netboot boolean NOT NULL DEFAULT false;
-- The hardware records it toggles: those its hardware map named, resolved
-- at creation, so its end switches the same records even if their
-- addresses changed meanwhile. Empty when it does not toggle.
ALTER TABLE workflow ADD COLUMN netboot_hardware uuid[] NOT NULL DEFAULT '{}';
