package spec

import (
	"strings"
	"testing"
)

func TestImageReference(t *testing.T) {
	good := []string{
		"alpine",
		"disk-wipe",
		"alpine:3.19",
		"library/alpine:latest",
		"quay.io/tinkerbell/disk-partition:v1.2",
		"localhost/tools/wipe",
		"localhost:5000/tools/wipe:v_1.2-rc.3",
		"10.1.0.2:5000/install-root-fs",
		"[fd00::2]:5000/install-root-fs",
		"registry.example.com/a/b/c@" + digest,
		"alpine:3@" + digest,
		"a__b.c-d---e",
		"x/a__b.c-d---e/f_g",
		"UPPER.example.com/a",
		"alpine:" + strings.Repeat("t", 128),
		strings.Repeat("a", 255),
	}
	for _, ref := range good {
		if msg := imageProblem(ref); msg != "" {
			t.Errorf("imageProblem(%q) = %s", ref, msg)
		}
	}
	bad := map[string]string{
		"":                                   "is required",
		"Alpine":                             "must be lower case",
		"library/Alpine":                     "must be lower case",
		"alpine:":                            "tag",
		"alpine:-x":                          "tag",
		"alpine:a b":                         "tag",
		"alpine:" + strings.Repeat("t", 129): "longer than 128",
		"alpine@sha256:" + strings.Repeat("A", 64): "digest",
		"alpine@md5:0123":                          "digest",
		"alpine@":                                  "digest",
		"/alpine":                                  "empty path component",
		"alpine/":                                  "empty path component",
		"a//b":                                     "empty path component",
		"a..b":                                     "path component",
		"-alpine":                                  "path component",
		"alpine_":                                  "path component",
		"a___b":                                    "path component",
		"al pine":                                  "path component",
		"-bad.host/alpine":                         "not a host name",
		"host:/alpine":                             "empty port",
		"host:0/alpine":                            "port",
		"host:http/alpine":                         "port",
		"[fd00::2/alpine":                          "unclosed",
		"[10.0.0.1]:5000/alpine":                   "not an IPv6 address",
		"[fd00::2]x/alpine":                        "after",
		strings.Repeat("a", 256):                   "longer than 255",
		"{{.image}}":                               "path component",
	}
	for ref, want := range bad {
		msg := imageProblem(ref)
		if msg == "" || !strings.Contains(msg, want) {
			t.Errorf("imageProblem(%q) = %q, want it to mention %q", ref, msg, want)
		}
	}
}
