// Package worker is herd-worker, which runs a machine's workflow actions
// as containers inside the OSIE, and the core action images.
//
// herd-worker --runtime picks what runs the action containers: docker
// (default; the Docker engine, internal/docker) or runc (internal/runc:
// runc run directly on an overlay of the image, which herd-worker pulls
// and unpacks itself, so no container engine is needed).
package worker
