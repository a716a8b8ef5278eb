// Package kcmdline reads a Linux kernel command line the way the kernel
// splits it. boots writes herd's settings there; the OSIE's init and the
// sandbox's installed OS read them back.
package kcmdline

import "strings"

// Split cuts line into its parameters at spaces, tabs and newlines outside
// double quotes. Quotes stay in the fields, as the kernel leaves them.
func Split(line string) []string {
	var fields []string
	var cur strings.Builder
	quoted := false
	for _, r := range line {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case (r == ' ' || r == '\t' || r == '\n') && !quoted:
			if cur.Len() > 0 {
				fields = append(fields, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		fields = append(fields, cur.String())
	}
	return fields
}
