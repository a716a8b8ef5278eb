package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// ext2/3/4 superblock: 1024 bytes into the partition; the magic at 0x38,
// the volume name (16 bytes, NUL-padded) at 0x78.
const (
	superblockOffset = 1024
	extMagic         = 0xEF53
)

// ExtLabel reads the volume label of an ext2/3/4 file system from its
// first 2048 bytes; ok is false when they hold no ext superblock.
func ExtLabel(head []byte) (label string, ok bool) {
	if len(head) < superblockOffset+0x78+16 {
		return "", false
	}
	sb := head[superblockOffset:]
	if binary.LittleEndian.Uint16(sb[0x38:]) != extMagic {
		return "", false
	}
	name := sb[0x78 : 0x78+16]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name), true
}

// FindRoot resolves root= to a device path: /dev/NAME is taken as is,
// LABEL=x is the block device (of devs, names under /dev) whose ext
// superblock carries that label; head reads a device's first bytes.
func FindRoot(spec string, devs []string, head func(dev string) ([]byte, error)) (string, error) {
	if strings.HasPrefix(spec, "/dev/") {
		for _, d := range devs {
			if d == spec {
				return d, nil
			}
		}
		return "", fmt.Errorf("root=%s: no such device yet", spec)
	}
	label, ok := strings.CutPrefix(spec, "LABEL=")
	if !ok || label == "" {
		return "", fmt.Errorf("root=%s: want /dev/NAME or LABEL=name", spec)
	}
	for _, d := range devs {
		b, err := head(d)
		if err != nil {
			continue // a CD-ROM drive with no medium, a device going away
		}
		if l, ok := ExtLabel(b); ok && l == label {
			return d, nil
		}
	}
	return "", fmt.Errorf("root=%s: no ext file system with that label among %d block devices", spec, len(devs))
}

// ParseModuleList reads the module list build.sh writes: one path of a
// .ko per line, already in load order (dependencies first), "#" comments.
// A path listed twice is loaded once, at its first place.
func ParseModuleList(r io.Reader) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasSuffix(line, ".ko") {
			return nil, fmt.Errorf("module list: %q is not a .ko path", line)
		}
		if !seen[line] {
			seen[line] = true
			out = append(out, line)
		}
	}
	return out, sc.Err()
}
