package store

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
)

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

// Unavailable reports whether err says the database could not be reached
// or dropped the connection (it restarted, shut down, is starting up, the
// network failed): the caller may send the same request again. A write
// that failed this way may or may not have committed; every store write
// is safe to resend (reports are compare-and-swap and a repeat of the last
// one changes nothing).
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	switch st := sqlState(err); {
	case strings.HasPrefix(st, "08"): // connection exception
		return true
	case st == "57P01", st == "57P02", st == "57P03": // admin/crash shutdown, cannot connect now
		return true
	case st != "":
		return false
	}
	var opErr *net.OpError
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &opErr)
}

// Exhausted reports whether err says the database ran out of a resource
// (SQLSTATE class 53: its disk is full, it is out of memory or of
// connections) and names that resource. Nothing is wrong with the request:
// it may succeed once an operator frees the resource, so it is worth
// sending again later; a write refused this way did not commit.
func Exhausted(err error) (cause string, ok bool) {
	switch st := sqlState(err); {
	case st == "53100":
		return "disk full", true
	case st == "53200":
		return "out of memory", true
	case st == "53300":
		return "too many connections", true
	case strings.HasPrefix(st, "53"):
		return "insufficient resources (SQLSTATE " + st + ")", true
	}
	return "", false
}
