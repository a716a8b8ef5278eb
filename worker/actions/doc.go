// Package actions holds herd's core action images, one static Go program
// each with a FROM scratch Dockerfile: image2disk, writefile, reboot. This
// package's tests build the images with a private dockerd and run them as
// herd-worker would.
package actions
