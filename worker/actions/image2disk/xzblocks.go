package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"
	"runtime"

	"github.com/ulikunitz/xz/lzma"
)

// xz's multi-threaded compressor (`xz -T`, what image builders use) cuts
// the image into blocks and writes each block's sizes in its header, so
// the blocks can be decoded at once on several cores; the Go LZMA2
// decoder is several times slower per core than liblzma, so this is where
// the cores pay. Streams without sizes (single-threaded xz) go to the
// sequential decoder. The container format: https://tukaani.org/xz/xz-file-format.txt

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

const (
	xzStreamHeader = 12
	lzma2FilterID  = 0x21
	// A block's sizes come from the image: refuse sizes no encoder writes
	// (xz -9's blocks are 192 MiB) before allocating them.
	xzMaxBlock = 1 << 30
)

var crc64Table = crc64.MakeTable(crc64.ECMA)

// xzBlockHeader is what a block header says.
type xzBlockHeader struct {
	compressed, uncompressed int64
	dictCap                  int
}

// parseXZBlockHeader reads a whole block header h (its size byte
// included). ok is false for a valid header this decoder does not take
// (no sizes, or filters other than LZMA2 alone).
func parseXZBlockHeader(h []byte) (xzBlockHeader, bool, error) {
	var b xzBlockHeader
	if len(h) < 8 || len(h) != (int(h[0])+1)*4 {
		return b, false, errors.New("xz block header: bad size")
	}
	body, sum := h[:len(h)-4], binary.LittleEndian.Uint32(h[len(h)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return b, false, errors.New("xz block header: CRC32 mismatch")
	}
	flags, p := body[1], body[2:]
	if flags&0x3c != 0 {
		return b, false, errors.New("xz block header: reserved flags set")
	}
	if flags&0xc0 != 0xc0 || flags&0x03 != 0 {
		return b, false, nil // sizes missing, or a filter chain
	}
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	cs, ok1 := next()
	us, ok2 := next()
	id, ok3 := next()
	ps, ok4 := next()
	if !ok1 || !ok2 || !ok3 || !ok4 || len(p) < 1 {
		return b, false, errors.New("xz block header: truncated fields")
	}
	if id != lzma2FilterID || ps != 1 {
		return b, false, nil
	}
	if cs == 0 || cs > xzMaxBlock || us > xzMaxBlock {
		return b, false, fmt.Errorf("xz block header: sizes %d/%d out of range", cs, us)
	}
	prop := p[0]
	if prop > 40 {
		return b, false, fmt.Errorf("xz block header: LZMA2 dictionary property %d", prop)
	}
	b.dictCap = 1<<32 - 1
	if prop < 40 {
		b.dictCap = (2 | int(prop&1)) << (prop/2 + 11)
	}
	b.compressed, b.uncompressed = int64(cs), int64(us)
	return b, true, nil
}

// xzCheckSize is the size of the integrity check of check type id, and
// whether this decoder verifies it.
func xzCheckSize(id byte) (int, bool) {
	switch id {
	case 0x00:
		return 0, true
	case 0x01:
		return 4, true
	case 0x04:
		return 8, true
	case 0x0a:
		return 32, true
	}
	return 0, false
}

// xzParallel tells from the stream's first bytes whether its blocks can
// be decoded concurrently.
func xzParallel(head []byte) bool {
	if len(head) < xzStreamHeader+1 || !bytes.HasPrefix(head, xzMagic) {
		return false
	}
	if _, ok := xzCheckSize(head[7] & 0x0f); !ok {
		return false
	}
	size := (int(head[xzStreamHeader]) + 1) * 4
	if head[xzStreamHeader] == 0 || len(head) < xzStreamHeader+size {
		return false
	}
	_, ok, err := parseXZBlockHeader(head[xzStreamHeader : xzStreamHeader+size])
	return ok && err == nil
}

// xzBlock is one block to decode and where its result goes.
type xzBlock struct {
	header xzBlockHeader
	data   []byte
	check  []byte
	kind   byte // check type
	out    chan xzResult
}

type xzResult struct {
	raw []byte
	err error
}

// xzBlocksReader decodes the blocks of r's xz streams on several cores
// and reads them back in order.
type xzBlocksReader struct {
	results chan chan xzResult // in stream order
	cur     []byte
	err     error
}

// byteStream is what the block splitter reads: the stage reader.
type byteStream interface {
	io.Reader
	io.ByteReader
}

func newXZBlocksReader(r byteStream) *xzBlocksReader {
	workers := min(runtime.NumCPU(), 4) // memory: two blocks in flight per worker
	x := &xzBlocksReader{results: make(chan chan xzResult, workers)}
	jobs := make(chan xzBlock, workers)
	for range workers {
		go func() {
			for b := range jobs {
				raw, err := b.decode()
				b.out <- xzResult{raw, err}
			}
		}()
	}
	go func() {
		defer close(x.results)
		defer close(jobs)
		err := splitXZ(r, func(b xzBlock) {
			b.out = make(chan xzResult, 1)
			x.results <- b.out
			jobs <- b
		})
		if err != nil {
			out := make(chan xzResult, 1)
			out <- xzResult{err: err}
			x.results <- out
		}
	}()
	return x
}

func (x *xzBlocksReader) Read(p []byte) (int, error) {
	for len(x.cur) == 0 {
		if x.err != nil {
			return 0, x.err
		}
		out, ok := <-x.results
		if !ok {
			x.err = io.EOF
			continue
		}
		res := <-out
		x.cur, x.err = res.raw, res.err
	}
	n := copy(p, x.cur)
	x.cur = x.cur[n:]
	return n, nil
}

// splitXZ reads r's streams block by block, handing each to decode, and
// checks the rest of the container (index, footer, padding) as it goes.
func splitXZ(r byteStream, decode func(xzBlock)) error {
	for streams := 0; ; streams++ {
		head := make([]byte, xzStreamHeader)
		if streams > 0 {
			// Stream padding (zeros in fours), then another stream or the end.
			for {
				if _, err := io.ReadFull(r, head[:4]); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if !bytes.Equal(head[:4], []byte{0, 0, 0, 0}) {
					break
				}
			}
			if _, err := io.ReadFull(r, head[4:]); err != nil {
				return err
			}
		} else if _, err := io.ReadFull(r, head); err != nil {
			return err
		}
		if !bytes.HasPrefix(head, xzMagic) || crc32.ChecksumIEEE(head[6:8]) != binary.LittleEndian.Uint32(head[8:]) {
			return errors.New("xz: bad stream header")
		}
		kind := head[7] & 0x0f
		checkSize, ok := xzCheckSize(kind)
		if !ok {
			return fmt.Errorf("xz: check type %d is not supported", kind)
		}
		blocks, err := splitXZBlocks(r, kind, checkSize, decode)
		if err != nil {
			return err
		}
		if err := skipXZIndex(r, blocks); err != nil {
			return err
		}
	}
}

// splitXZBlocks reads one stream's blocks up to its index indicator, and
// returns how many there were.
func splitXZBlocks(r byteStream, kind byte, checkSize int, decode func(xzBlock)) (int, error) {
	for n := 0; ; n++ {
		size, err := r.ReadByte()
		if err != nil {
			return n, err
		}
		if size == 0 {
			return n, nil // the index follows
		}
		h := make([]byte, (int(size)+1)*4)
		h[0] = size
		if _, err := io.ReadFull(r, h[1:]); err != nil {
			return n, err
		}
		bh, ok, err := parseXZBlockHeader(h)
		if err != nil {
			return n, err
		}
		if !ok {
			return n, fmt.Errorf("xz block %d: no sizes in its header or a filter other than LZMA2, after blocks that had them: not supported", n+1)
		}
		padded := (bh.compressed + 3) &^ 3
		buf := make([]byte, padded+int64(checkSize))
		if _, err := io.ReadFull(r, buf); err != nil {
			return n, err
		}
		decode(xzBlock{header: bh, data: buf[:bh.compressed], check: buf[padded:], kind: kind})
	}
}

// skipXZIndex reads the index after the indicator byte and the stream
// footer; the blocks' own headers already gave their sizes.
func skipXZIndex(r byteStream, blocks int) error {
	crc := crc32.NewIEEE()
	crc.Write([]byte{0})
	tee := &teeByteReader{r: r, w: crc}
	records, err := binary.ReadUvarint(tee)
	if err != nil {
		return err
	}
	if records != uint64(blocks) {
		return fmt.Errorf("xz index: %d records for %d blocks", records, blocks)
	}
	for i := uint64(0); i < 2*records; i++ {
		if _, err := binary.ReadUvarint(tee); err != nil {
			return err
		}
	}
	for tee.n%4 != 3 { // indicator byte + fields, padded to four
		if _, err := tee.ReadByte(); err != nil {
			return err
		}
	}
	tail := make([]byte, 4+12)
	if _, err := io.ReadFull(r, tail); err != nil {
		return err
	}
	if crc.Sum32() != binary.LittleEndian.Uint32(tail[:4]) {
		return errors.New("xz index: CRC32 mismatch")
	}
	if !bytes.Equal(tail[14:], []byte{'Y', 'Z'}) {
		return errors.New("xz: bad stream footer")
	}
	return nil
}

type teeByteReader struct {
	r io.ByteReader
	w io.Writer
	n int
}

func (t *teeByteReader) ReadByte() (byte, error) {
	c, err := t.r.ReadByte()
	if err == nil {
		t.w.Write([]byte{c})
		t.n++
	}
	return c, err
}

// decode decodes one block and verifies its size and check.
func (b xzBlock) decode() ([]byte, error) {
	// The block starts with an empty dictionary: it never needs more than
	// the block's size, whatever its header claims.
	dict := max(min(int64(b.header.dictCap), b.header.uncompressed), lzma.MinDictCap)
	dec, err := lzma.Reader2Config{DictCap: int(dict)}.NewReader2(bytes.NewReader(b.data))
	if err != nil {
		return nil, err
	}
	raw := make([]byte, b.header.uncompressed)
	if _, err := io.ReadFull(dec, raw); err != nil {
		return nil, fmt.Errorf("xz block: %w", err)
	}
	if n, _ := dec.Read(make([]byte, 1)); n != 0 {
		return nil, errors.New("xz block: more data than its header says")
	}
	var got []byte
	switch b.kind {
	case 0x01:
		got = binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(raw))
	case 0x04:
		got = binary.LittleEndian.AppendUint64(nil, crc64.Checksum(raw, crc64Table))
	case 0x0a:
		s := sha256.Sum256(raw)
		got = s[:]
	}
	if !bytes.Equal(got, b.check) {
		return nil, errors.New("xz block: integrity check mismatch")
	}
	return raw, nil
}
