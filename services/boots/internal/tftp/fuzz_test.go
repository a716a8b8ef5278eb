package tftp

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzRequest: a read request from the network never panics the parse,
// the negotiation or the file lookup. What parses re-encodes to a request
// that parses the same; a negotiation grants only the options asked, in
// the RFCs' ranges and within the server's limits; a file is opened only
// if it is one of the directory's (the one outside it is never reached).
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00windowsize\x0016\x00",
		"\x00\x01ipxe.efi\x00netascii\x00",
		"\x00\x01../secret\x00octet\x00",
		"\x00\x01/ipxe.efi\x00OCTET\x00BlkSize\x0065464\x00\x00\x00",
		"\x00\x01snp.efi\x00octet\x00windowsize\x000\x00",
		"\x00\x01a\x00octet\x00blksize\x00+512\x00blksize\x00512\x00",
		"\x00\x02ipxe.efi\x00octet\x00",
		"\x00",
	} {
		f.Add([]byte(seed))
	}
	root := f.TempDir()
	dir := filepath.Join(root, "boot")
	if err := os.Mkdir(dir, 0o755); err != nil {
		f.Fatal(err)
	}
	for name, body := range map[string]string{"ipxe.efi": "efi", "undionly.kpxe": "bios", "snponly.efi": "snp"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte("outside"), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		f.Fatal(err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	lim := limits{blksize: 1468, windowsize: 64, windowBytes: 64 << 10}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		r, err := parseRequest(pkt)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("refusal %v is not errMalformed", err)
			}
			return
		}
		if again, err := parseRequest(encode(pkt[:2], r)); err != nil || !sameRequest(again, r) {
			t.Fatalf("re-encoded %+v parses as %+v, %v", r, again, err)
		}
		g, err := negotiate(r.options, 3, lim)
		if err == nil {
			checkGrant(t, r, g, lim)
		}
		file, size, err := d.Open(r.filename)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Open(%q): %v is not ErrRefused", r.filename, err)
			}
			return
		}
		defer file.Close()
		body := make([]byte, 16)
		n, _ := file.Read(body)
		if got := string(body[:n]); size != int64(n) || got == "outside" || !strings.Contains("efi bios snp", got) {
			t.Fatalf("Open(%q) reached %q (%d bytes)", r.filename, got, size)
		}
	})
}

// encode writes r as a request packet with the opcode op.
func encode(op []byte, r request) []byte {
	var b bytes.Buffer
	b.Write(op)
	for _, s := range append([]string{r.filename, r.mode}, func() (out []string) {
		for _, o := range r.options {
			out = append(out, o.name, o.value)
		}
		return out
	}()...) {
		b.WriteString(s)
		b.WriteByte(0)
	}
	return b.Bytes()
}

func sameRequest(a, b request) bool {
	if a.filename != b.filename || a.mode != b.mode || len(a.options) != len(b.options) {
		return false
	}
	for i := range a.options {
		if a.options[i] != b.options[i] {
			return false
		}
	}
	return true
}

func checkGrant(t *testing.T, r request, g grant, lim limits) {
	t.Helper()
	if g.blksize < defaultBlksize || g.blksize > max(defaultBlksize, lim.blksize) {
		t.Fatalf("blksize %d granted (limit %d) for %+v", g.blksize, lim.blksize, r.options)
	}
	if g.windowsize < 1 || g.windowsize > lim.windowsize {
		t.Fatalf("windowsize %d granted (limit %d) for %+v", g.windowsize, lim.windowsize, r.options)
	}
	asked := map[string]bool{}
	for _, o := range r.options {
		asked[o.name] = true
	}
	for _, o := range g.oack {
		n, err := strconv.Atoi(o.value)
		if !asked[o.name] || err != nil || n < 0 {
			t.Fatalf("OACK %q=%q for a request asking %+v", o.name, o.value, r.options)
		}
	}
}
