// Package osimage holds the build (build.sh) and the boot test of the
// small OS disk image that herd's sandbox installs on its virtual machine:
// an MBR disk with a FAT boot partition (syslinux for BIOS and for UEFI,
// a Debian kernel, an initramfs whose /init is ./firstboot) and an ext4
// root partition whose /etc/hostname the writefile action replaces. See
// README.md.
package osimage
