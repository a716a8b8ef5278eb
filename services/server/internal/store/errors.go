package store

import "errors"

// The kinds of failure callers act on; the API edge maps each to one gRPC
// code. Errors from the store wrap one of them with what the user needs to
// know, e.g. "mac 08:00:27:00:00:01 already belongs to hardware <id>".
var (
	// ErrNotFound: no live record with that key.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change would break a uniqueness rule (an address
	// claimed by two records, a template name used twice).
	ErrConflict = errors.New("conflict")
	// ErrPrecondition: the record is in a state that does not allow the
	// change (hardware used by an unfinished workflow, a report out of order).
	ErrPrecondition = errors.New("failed precondition")
	// ErrInvalid: the argument cannot be right whatever the state (an id
	// that is not a UUID, an empty name).
	ErrInvalid = errors.New("invalid argument")
)
