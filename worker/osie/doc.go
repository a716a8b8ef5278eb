// Package osie holds the test that builds herd's OSIE (build.sh) and boots
// it in QEMU; the OSIE's init is in ./init. See README.md.
package osie
