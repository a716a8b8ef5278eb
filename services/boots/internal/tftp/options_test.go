package tftp

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  string
		want request
		err  string
	}{
		{"plain", "\x00\x01ipxe.efi\x00octet\x00", request{filename: "ipxe.efi", mode: "octet"}, ""},
		// iPXE's request: blksize and tsize.
		{"ipxe", "\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00",
			request{filename: "undionly.kpxe", mode: "octet", options: []option{{"blksize", "1432"}, {"tsize", "0"}}}, ""},
		{"case", "\x00\x01a\x00OCTET\x00WindowSize\x004\x00", request{filename: "a", mode: "octet", options: []option{{"windowsize", "4"}}}, ""},
		{"padded", "\x00\x01a\x00octet\x00\x00\x00\x00", request{filename: "a", mode: "octet"}, ""},
		{"short", "\x00", request{}, "1 bytes"},
		{"unterminated", "\x00\x01a\x00octet", request{}, "not NUL-terminated"},
		{"no mode", "\x00\x01a\x00", request{}, "no filename or mode"},
		{"empty name", "\x00\x01\x00octet\x00", request{}, "no filename or mode"},
		{"option without value", "\x00\x01a\x00octet\x00blksize\x00", request{}, `option "blksize" has no value`},
		{"empty option name", "\x00\x01a\x00octet\x00\x00512\x00", request{}, "empty option name"},
	} {
		got, err := parseRequest([]byte(tc.pkt))
		if tc.err != "" {
			if err == nil || !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestNegotiate(t *testing.T) {
	lim := limits{blksize: 1472, windowsize: 64, windowBytes: 128 << 10}
	o := func(kv ...string) []option {
		var opts []option
		for i := 0; i < len(kv); i += 2 {
			opts = append(opts, option{kv[i], kv[i+1]})
		}
		return opts
	}
	for _, tc := range []struct {
		name string
		opts []option
		want grant
		err  string
	}{
		{"none", nil, grant{blksize: 512, windowsize: 1}, ""},
		{"ipxe", o("blksize", "1432", "tsize", "0"), grant{1432, 1, o("blksize", "1432", "tsize", "850528")}, ""},
		{"blksize clamped to the MTU", o("blksize", "65464"), grant{1472, 1, o("blksize", "1472")}, ""},
		{"blksize 512", o("blksize", "512"), grant{512, 1, o("blksize", "512")}, ""},
		{"windowsize", o("blksize", "1468", "windowsize", "16"), grant{1468, 16, o("blksize", "1468", "windowsize", "16")}, ""},
		{"windowsize before blksize", o("windowsize", "16", "blksize", "1468"), grant{1468, 16, o("windowsize", "16", "blksize", "1468")}, ""},
		{"windowsize clamped", o("windowsize", "65535"), grant{512, 64, o("windowsize", "64")}, ""},
		{"windowsize 1", o("windowsize", "1"), grant{512, 1, o("windowsize", "1")}, ""},
		// blksize is clamped to the MTU first: 128 KiB holds 89 blocks of 1472, above 64.
		{"window bytes", o("blksize", "8192", "windowsize", "100"), grant{1472, 64, o("blksize", "1472", "windowsize", "64")}, ""},
		{"unknown ignored", o("timeout", "5", "multicast", ""), grant{blksize: 512, windowsize: 1}, ""},
		{"blksize 8", o("blksize", "8"), grant{}, "below 512"},
		{"blksize 7", o("blksize", "7"), grant{}, "outside 8..65464"},
		{"blksize 65465", o("blksize", "65465"), grant{}, "outside 8..65464"},
		{"windowsize 0", o("windowsize", "0"), grant{}, "outside 1..65535"},
		{"windowsize 65536", o("windowsize", "65536"), grant{}, "outside 1..65535"},
		{"negative", o("blksize", "-1"), grant{}, "not a decimal number"},
		{"plus", o("windowsize", "+4"), grant{}, "not a decimal number"},
		{"huge", o("tsize", "99999999999999999999"), grant{}, "not a decimal number"},
		{"empty", o("blksize", ""), grant{}, "not a decimal number"},
		{"twice", o("blksize", "1024", "blksize", "512"), grant{}, "given twice"},
	} {
		got, err := negotiate(tc.opts, 850528, lim)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	// A large blksize where the MTU allows it: the window shrinks to fit
	// windowBytes.
	big := limits{blksize: maxBlksize, windowsize: 64, windowBytes: 128 << 10}
	if g, _ := negotiate(o("blksize", "65464", "windowsize", "65535"), 1, big); g.blksize != 65464 || g.windowsize != 2 {
		t.Errorf("blksize 65464 windowsize 65535: granted %d × %d, want 65464 × 2", g.blksize, g.windowsize)
	}
}

func TestAcknowledged(t *testing.T) {
	for _, tc := range []struct {
		num      uint16
		from, to int64
		want     int64
		ok       bool
	}{
		{0, 0, 0, 0, true},             // ACK of the OACK
		{1, 0, 0, 0, false},            // not an ACK of the OACK
		{1, 0, 1, 1, true},             // lock step
		{0, 0, 1, 0, false},            // stale: the OACK's ACK again
		{4, 0, 8, 4, true},             // a gap after block 4 (RFC 7440)
		{8, 0, 8, 8, true},             // the whole window
		{9, 0, 8, 0, false},            // beyond what was sent
		{7, 7, 15, 0, false},           // stale duplicate: Sorcerer's Apprentice
		{2, 65534, 65540, 65538, true}, // rolled over past 65535
		{0, 65534, 65540, 65536, true},
		{65535, 65534, 65540, 65535, true},
		{65534, 65534, 65540, 0, false},
	} {
		got, ok := acknowledged(tc.num, tc.from, tc.to)
		if got != tc.want || ok != tc.ok {
			t.Errorf("acknowledged(%d, %d, %d) = %d, %v; want %d, %v", tc.num, tc.from, tc.to, got, ok, tc.want, tc.ok)
		}
	}
}
