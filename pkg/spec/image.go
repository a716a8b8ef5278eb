package spec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Limits of a container image reference, as registries enforce them.
const (
	maxImageNameLength = 255 // the repository name with its registry host
	maxTagLength       = 128
)

// imageProblem checks a container image reference:
//
//	[host[:port]/]path[/path...][:tag][@sha256:<64 hex digits>]
//
// The first component is a registry host when it has a "." or ":" or is
// "localhost" (Docker's rule); otherwise the image is looked up in the
// default registry, like Tinkerbell's short names (disk-wipe). Path
// components are lower-case letters and digits joined by ".", "_", "__" or
// runs of "-". It returns "" for a valid reference, else what is wrong.
func imageProblem(ref string) string {
	if ref == "" {
		return "is required"
	}
	bad := func(why string) string {
		return fmt.Sprintf("%s is not an image reference: %s", quote(ref), why)
	}
	rest := ref
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		digest := rest[i+1:]
		rest = rest[:i]
		hexPart, ok := strings.CutPrefix(digest, "sha256:")
		if !ok || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
			return bad("the digest must be sha256: and 64 lower-case hex digits")
		}
	}
	name := rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i+1:], "/") {
		name = rest[:i]
		if msg := tagProblem(rest[i+1:]); msg != "" {
			return bad(msg)
		}
	}
	if name == "" {
		return bad("the name is empty")
	}
	if len(name) > maxImageNameLength {
		return bad(fmt.Sprintf("the name is longer than %d characters", maxImageNameLength))
	}
	parts := strings.Split(name, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:[") || parts[0] == "localhost") {
		if msg := registryProblem(parts[0]); msg != "" {
			return bad(msg)
		}
		parts = parts[1:]
	}
	for _, c := range parts {
		if msg := pathComponentProblem(c); msg != "" {
			return bad(msg)
		}
	}
	return ""
}

// tagProblem: a word character, then up to 127 word characters, "." or "-".
func tagProblem(tag string) string {
	if tag == "" {
		return "the tag after \":\" is empty"
	}
	if len(tag) > maxTagLength {
		return fmt.Sprintf("the tag is longer than %d characters", maxTagLength)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		word := c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !word && (i == 0 || c != '.' && c != '-') {
			return fmt.Sprintf("tag %s may hold letters, digits, \"_\", and after its first character \".\" and \"-\"", quote(tag))
		}
	}
	return ""
}

// registryProblem checks host[:port], host being DNS labels or a bracketed
// IPv6 address.
func registryProblem(s string) string {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return fmt.Sprintf("registry %s has an unclosed \"[\"", quote(s))
		}
		host, port = s[1:end], s[end+1:]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Sprintf("registry %s: %s is not an IPv6 address", quote(s), quote(host))
		}
		if port != "" {
			p, ok := strings.CutPrefix(port, ":")
			if !ok {
				return fmt.Sprintf("registry %s: unexpected text after \"]\"", quote(s))
			}
			port = p
			if port == "" {
				return fmt.Sprintf("registry %s has an empty port", quote(s))
			}
		}
	} else {
		if i := strings.IndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
			if port == "" {
				return fmt.Sprintf("registry %s has an empty port", quote(s))
			}
		}
		for _, label := range strings.Split(host, ".") {
			if label == "" || label[0] == '-' || label[len(label)-1] == '-' || len(label) > 63 {
				return fmt.Sprintf("registry host %s is not a host name", quote(host))
			}
			for i := 0; i < len(label); i++ {
				c := label[i]
				if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
					return fmt.Sprintf("registry host %s is not a host name", quote(host))
				}
			}
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strings.Trim(port, "0123456789") != "" {
			return fmt.Sprintf("registry %s: port %s is not a number from 1 to 65535", quote(s), quote(port))
		}
	}
	return ""
}

// pathComponentProblem: [a-z0-9]+ joined by ".", "_", "__" or "-"+.
func pathComponentProblem(c string) string {
	if c == "" {
		return "it has an empty path component (\"//\", or a leading or trailing \"/\")"
	}
	if strings.ToLower(c) != c {
		return fmt.Sprintf("path component %s must be lower case", quote(c))
	}
	alnum := func(b byte) bool { return b >= '0' && b <= '9' || b >= 'a' && b <= 'z' }
	bad := fmt.Sprintf("path component %s may hold lower-case letters and digits separated by \".\", \"_\", \"__\" or \"-\"", quote(c))
	i := 0
	for {
		start := i
		for i < len(c) && alnum(c[i]) {
			i++
		}
		if i == start {
			return bad
		}
		if i == len(c) {
			return ""
		}
		sep := i
		for i < len(c) && !alnum(c[i]) {
			i++
		}
		switch s := c[sep:i]; {
		case s == "." || s == "_" || s == "__":
		case strings.Trim(s, "-") == "":
		default:
			return bad
		}
	}
}
