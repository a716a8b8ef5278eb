// Package spec reads and checks the files operators write: Tinkerbell v0.6's
// hardware JSON and template YAML. The server and the CLI share it, so a bad
// file is refused with the same message on both sides.
//
// Every problem is reported as a *FieldError naming the field the way the
// operator wrote it (network.interfaces[0].dhcp.mac, tasks[1].actions[0].image);
// several problems come back joined with errors.Join, so callers find them
// with errors.As.
package spec
