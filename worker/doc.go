// Package worker is herd-worker, which runs a machine's workflow actions
// as containers inside the OSIE, and the core action images.
package worker
