// Package pkg is the root of what two or more herd parts share; each
// subpackage is one concern (spec, certs, config, logging, observe, pgtest).
package pkg
