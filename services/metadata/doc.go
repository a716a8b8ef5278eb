// Package metadata is herd-metadata: EC2-style and JSON instance metadata
// for the machine that asks.
package metadata
