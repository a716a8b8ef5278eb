package ec2

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/herd-metal/herd/proto/hardware"
)

// field is one row of the meta-data table: a file under meta-data/ and the
// machine's value(s) there, one per line. A field whose value is empty is
// absent for that machine: it is not listed and answers 404, as on EC2
// (cloud-init gives up on a whole crawl when a listed entry fails).
// public-keys, whose layout is EC2's "N=name" listing over N/openssh-key
// files, is not a row: it has its own few lines below.
type field struct {
	path  string
	value func(*Instance) []string
}

func one(f func(*Instance) string) func(*Instance) []string {
	return func(in *Instance) []string {
		if v := f(in); v != "" {
			return []string{v}
		}
		return nil
	}
}

// metaData is the meta-data tree. Adding a field is adding a row; the
// directory listings follow from the paths.
var metaData = []field{
	{"instance-id", one(func(in *Instance) string { return in.ID })},
	{"hostname", one(func(in *Instance) string { return in.Hostname })},
	{"local-hostname", one(func(in *Instance) string { return in.Hostname })},
	{"local-ipv4", one(func(in *Instance) string { return in.LocalIPv4 })},
	{"public-ipv4", one(func(in *Instance) string { return in.PublicIPv4 })},
	{"public-ipv6", one(func(in *Instance) string { return in.PublicIPv6 })},
	{"placement/availability-zone", one(func(in *Instance) string { return in.Facility })},
	{"plan", one(func(in *Instance) string { return in.Plan })},
	{"tags", func(in *Instance) []string { return in.Tags }},
	{"operating-system/slug", one(func(in *Instance) string { return in.OSSlug })},
	{"operating-system/distro", one(func(in *Instance) string { return in.OSDistro })},
	{"operating-system/version", one(func(in *Instance) string { return in.OSVersion })},
}

// Versions are the EC2 API versions served; "latest" is the same tree.
var Versions = []string{"2009-04-04", "latest"}

// Route labels of the routes outside the table.
const (
	LabelRoot         = "/"
	LabelVersion      = "version"
	LabelMetaData     = "meta-data"
	LabelUserData     = "user-data"
	LabelMetadataJSON = "metadata"
	LabelPublicKeys   = "meta-data/public-keys"
)

// Labels are the route labels of the metrics, one per table row plus the
// fixed routes: a bounded set, whatever paths callers send.
func Labels() []string {
	out := []string{LabelRoot, LabelVersion, LabelMetaData, LabelUserData, LabelMetadataJSON, LabelPublicKeys}
	for _, f := range metaData {
		out = append(out, "meta-data/"+f.path)
	}
	for _, f := range metaData {
		if i := strings.IndexByte(f.path, '/'); i > 0 {
			out = append(out, "meta-data/"+f.path[:i])
		}
	}
	return dedupe(out)
}

// Content types of the answers.
const (
	TextPlain = "text/plain; charset=utf-8"
	AppJSON   = "application/json"
)

// Response is a ready answer: its body, its Content-Type and the metrics
// label of its route. It is a small value pointing into memory prepared
// when the record changed; making one allocates nothing.
type Response struct {
	Body        string
	ContentType string
	Label       string
	// Dir: a listing, also served with a trailing slash.
	Dir bool
}

// The shared table: every machine has the same possible paths, so the
// paths, their labels and the directories' children are computed once.
// A machine holds only its values (see Prepared).

// Segments of a machine's buffer, after the table's rows (segment i is
// metaData[i]).
var (
	segUserData = len(metaData)     // user-data
	segKeyList  = len(metaData) + 1 // the public-keys listing ("0=name\n1=name")
	segFirstKey = len(metaData) + 2 // key N is segment segFirstKey+N
)

// A directory's children that are not table rows.
const (
	childKeys     = -1 // public-keys/, present when the machine has keys
	childUserData = -2 // user-data, at the version root
)

// dirEntry is one child of a directory: its name in the listing and what
// decides whether it is there: a table row's value, or the keys or the
// user-data (childKeys, childUserData), or a subdirectory that has
// children itself (sub ≥ 0).
type dirEntry struct {
	name string // with a trailing slash for directories
	row  int    // index in metaData, or childKeys / childUserData; unused for a subdirectory
	sub  int    // index in table.dirs, or -1
}

type dir struct {
	path, label string
	children    []dirEntry // sorted by name, as EC2 lists
}

// node is what a fixed path is: a table row's file, a directory of the
// table, the public-keys listing or the user-data.
type node struct {
	kind nodeKind
	i    int // metaData index of a row, table.dirs index of a directory
}

type nodeKind int

const (
	nodeRow nodeKind = iota
	nodeDir
	nodeKeys
	nodeUserData
)

type table struct {
	dirs  []dir
	paths map[string]node // a path under a version, no slashes at either end
}

const keysPrefix = "meta-data/public-keys/"

var shared = buildTable()

func buildTable() *table {
	t := &table{paths: map[string]node{}}
	dirIndex := map[string]int{}
	var addDir func(path string) int
	addDir = func(path string) int {
		if i, ok := dirIndex[path]; ok {
			return i
		}
		// The parent first: a directory's children come after it in
		// t.dirs (Tree.shape relies on it).
		p := -1
		parent, name := "", path
		if path != "" {
			if j := strings.LastIndexByte(path, '/'); j >= 0 {
				parent, name = path[:j], path[j+1:]
			}
			p = addDir(parent)
		}
		i := len(t.dirs)
		dirIndex[path] = i
		t.dirs = append(t.dirs, dir{path: path, label: dirLabel(path)})
		t.paths[path] = node{kind: nodeDir, i: i}
		if p >= 0 {
			t.dirs[p].children = append(t.dirs[p].children, dirEntry{name: name + "/", sub: i})
		}
		return i
	}
	addDir("")
	for row, f := range metaData {
		path := "meta-data/" + f.path
		parent, name := path[:strings.LastIndexByte(path, '/')], path[strings.LastIndexByte(path, '/')+1:]
		d := addDir(parent)
		t.dirs[d].children = append(t.dirs[d].children, dirEntry{name: name, row: row, sub: -1})
		t.paths[path] = node{kind: nodeRow, i: row}
	}
	md := addDir("meta-data")
	t.dirs[md].children = append(t.dirs[md].children, dirEntry{name: "public-keys/", row: childKeys, sub: -1})
	t.dirs[0].children = append(t.dirs[0].children, dirEntry{name: "user-data", row: childUserData, sub: -1})
	t.paths["user-data"] = node{kind: nodeUserData}
	t.paths["meta-data/public-keys"] = node{kind: nodeKeys}
	for i := range t.dirs {
		sort.Slice(t.dirs[i].children, func(a, b int) bool { return t.dirs[i].children[a].name < t.dirs[i].children[b].name })
	}
	return t
}

// shape is the listings of the table's directories for one combination
// of present values. Machines with the same fields present (nearly all of
// a fleet) share one.
type shape struct {
	listing []string // per table.dirs index; "" with no children (the version root is always there)
}

// Tree prepares machines' answers; it interns the listings every machine
// with the same present fields shares. Its zero value is not ready: use
// NewTree. Safe for concurrent use.
type Tree struct {
	mu     sync.Mutex
	shapes map[uint64]*shape
}

// NewTree returns a Tree with no shapes yet.
func NewTree() *Tree { return &Tree{shapes: map[uint64]*shape{}} }

// present is a bit set of what a machine has: bit i for metaData row i,
// then the keys, then user-data.
func (p *Prepared) present() uint64 {
	var m uint64
	for row := range metaData {
		if p.seg(row) != "" {
			m |= 1 << row
		}
	}
	if p.keys > 0 {
		m |= 1 << len(metaData)
	}
	if p.seg(segUserData) != "" {
		m |= 1 << (len(metaData) + 1)
	}
	return m
}

func (t *Tree) shape(mask uint64) *shape {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.shapes[mask]; ok {
		return s
	}
	s := &shape{listing: make([]string, len(shared.dirs))}
	has := func(e dirEntry) bool {
		switch {
		case e.sub >= 0:
			return s.listing[e.sub] != ""
		case e.row == childKeys:
			return mask&(1<<len(metaData)) != 0
		case e.row == childUserData:
			return mask&(1<<(len(metaData)+1)) != 0
		}
		return mask&(1<<e.row) != 0
	}
	// Children come after their parents in table.dirs: walk backwards.
	for i := len(shared.dirs) - 1; i >= 0; i-- {
		var names []string
		for _, e := range shared.dirs[i].children {
			if has(e) {
				names = append(names, e.name)
			}
		}
		s.listing[i] = strings.Join(names, "\n")
	}
	t.shapes[mask] = s
	return s
}

// Prepared is everything herd-metadata answers one machine, computed when
// its record changes: the metadata document and its values in one buffer,
// sliced by offsets, and the listings of its shape.
type Prepared struct {
	// ID is the hardware id, for logs.
	ID string
	// Addresses are the machine's addresses from its metadata document
	// (see Addresses).
	Addresses []netip.Addr
	// buf is the segments' spans (start and end, 4 bytes each, little
	// endian), then the whole metadata document, then the values the
	// document does not spell as they are answered: most segments point
	// into the document. One allocation per machine.
	buf    string
	docLen uint32
	keys   int
	shape  *shape
	// noted is when the machine's reading was last noted on its
	// workflow's timeline (unix seconds; see NoteDue).
	noted atomic.Int64
}

// NoteDue says whether a read at now (unix seconds) is to be noted on the
// machine's timeline: the first of each period, so that a crawl of many
// paths, or many crawls, make one note. Lock-free: it is on every
// answer's path.
func (p *Prepared) NoteDue(now, period int64) bool {
	last := p.noted.Load()
	return now-last >= period && p.noted.CompareAndSwap(last, now)
}

// spanAt reads the offset stored at buf[at:at+4].
func (p *Prepared) spanAt(at int) int {
	b := p.buf[at : at+4]
	return int(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
}

// RecordFree tells the inventory (pkg/inventory) that a Prepared holds
// everything herd-metadata answers: it keeps no copy of the record.
func (*Prepared) RecordFree() {}

func (p *Prepared) seg(i int) string { return p.buf[p.spanAt(8*i):p.spanAt(8*i+4)] }

// spansLen is the length of the spans at the start of buf.
func (p *Prepared) spansLen() int { return 8 * (segFirstKey + p.keys) }

var root = Response{Body: strings.Join(Versions, "\n"), ContentType: TextPlain, Label: LabelRoot, Dir: true}

// Lookup returns the answer at path under a version ("meta-data/hostname";
// "" for the version root). dirSlash says the request ended in "/", which
// only a directory accepts.
func (p *Prepared) Lookup(path string, dirSlash bool) (Response, bool) {
	n, ok := shared.paths[path]
	if !ok {
		return p.key(path, dirSlash)
	}
	switch n.kind {
	case nodeKeys:
		if p.keys == 0 {
			return Response{}, false
		}
		return Response{Body: p.seg(segKeyList), ContentType: TextPlain, Label: LabelPublicKeys, Dir: true}, true
	case nodeUserData:
		if body := p.seg(segUserData); body != "" && !dirSlash {
			return Response{Body: body, ContentType: TextPlain, Label: LabelUserData}, true
		}
		return Response{}, false
	case nodeRow:
		if body := p.seg(n.i); body != "" && !dirSlash {
			return Response{Body: body, ContentType: TextPlain, Label: labels[n.i]}, true
		}
		return Response{}, false
	}
	body := p.shape.listing[n.i]
	if body == "" && n.i != 0 { // the version root is always there
		return Response{}, false
	}
	return Response{Body: body, ContentType: TextPlain, Label: shared.dirs[n.i].label, Dir: true}, true
}

// labels are the rows' metrics labels.
var labels = func() []string {
	out := make([]string, len(metaData))
	for i, f := range metaData {
		out[i] = "meta-data/" + f.path
	}
	return out
}()

// key answers public-keys/N (a listing: "openssh-key") and
// public-keys/N/openssh-key. N is written as EC2 does: no sign, no
// leading zeros.
func (p *Prepared) key(path string, dirSlash bool) (Response, bool) {
	rest, ok := strings.CutPrefix(path, keysPrefix)
	if !ok {
		return Response{}, false
	}
	num, file, isFile := strings.Cut(rest, "/")
	if isFile && file != "openssh-key" {
		return Response{}, false
	}
	n, ok := index(num)
	if !ok || n >= p.keys {
		return Response{}, false
	}
	if !isFile {
		return Response{Body: "openssh-key", ContentType: TextPlain, Label: LabelPublicKeys, Dir: true}, true
	}
	if dirSlash {
		return Response{}, false
	}
	return Response{Body: p.seg(segFirstKey + n), ContentType: TextPlain, Label: LabelPublicKeys}, true
}

// index reads a key's number: decimal digits, no leading zero.
func index(s string) (int, bool) {
	if s == "" || len(s) > 6 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// Root is the listing of the versions.
func (p *Prepared) Root() Response { return root }

// Metadata is the whole instance metadata document, JSON.
func (p *Prepared) Metadata() Response {
	start := p.spansLen()
	return Response{Body: p.buf[start : start+int(p.docLen)], ContentType: AppJSON, Label: LabelMetadataJSON}
}

// Prepare computes every answer for hw. It is the inventory's derive hook:
// it runs once per record change, never per request. The Prepared keeps
// hw's id (shared, not copied) and a copy of its metadata document; the
// inventory keeps no other copy of the record (RecordFree).
func (t *Tree) Prepare(hw *hardware.Hardware) *Prepared {
	in, addrs := parse(hw)
	p := &Prepared{ID: hw.GetId(), Addresses: addrs}

	var segs []string
	for _, f := range metaData {
		segs = append(segs, strings.Join(f.value(in), "\n"))
	}
	var names []string
	used := map[string]bool{}
	for i, key := range in.SSHKeys {
		name := keyName(key, i)
		if used[name] { // clients key the keys by name
			name = "key-" + strconv.Itoa(i)
		}
		used[name] = true
		names = append(names, strconv.Itoa(i)+"="+name)
	}
	segs = append(segs, in.UserData, strings.Join(names, "\n"))
	segs = append(segs, in.SSHKeys...)
	p.keys = len(in.SSHKeys)

	doc := strings.TrimSpace(hw.GetMetadata())
	if doc == "" {
		doc = "{}"
	}
	// Most values are spelled in the document as they are answered
	// (ids, names, keys): those point into it, which halves a machine's
	// memory; the others follow it in the buffer.
	spans := 8 * len(segs) // == p.spansLen()
	at := make([]int, len(segs))
	size := spans + len(doc)
	for i, s := range segs {
		if at[i] = strings.Index(doc, s); at[i] >= 0 {
			at[i] += spans
		} else {
			size += len(s)
		}
	}
	end := spans + len(doc)
	for i, s := range segs {
		if at[i] < 0 {
			at[i] = end
			end += len(s)
		}
	}
	// A Builder, not string([]byte): no copy, so no garbage of the
	// buffer's size class left between the machines' buffers.
	var b strings.Builder
	b.Grow(size)
	var span [8]byte
	for i, s := range segs {
		binary.LittleEndian.PutUint32(span[:4], uint32(at[i]))
		binary.LittleEndian.PutUint32(span[4:], uint32(at[i]+len(s)))
		b.Write(span[:])
	}
	b.WriteString(doc)
	for i, s := range segs {
		if at[i] >= spans+len(doc) {
			b.WriteString(s)
		}
	}
	p.buf, p.docLen = b.String(), uint32(len(doc))
	p.shape = t.shape(p.present())
	return p
}

// dirLabel is the metrics label of a listing: the version root, meta-data,
// or meta-data/ and the first segment below it (public-keys/0 counts as
// public-keys), so labels stay a fixed set.
func dirLabel(dir string) string {
	rest, ok := strings.CutPrefix(dir, "meta-data/")
	switch {
	case dir == "":
		return LabelVersion
	case !ok:
		return LabelMetaData
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return "meta-data/" + rest
}

// keyName is the name EC2 lists beside a key's index: the key's comment
// when it is a plain word, else "key-N". The listing's syntax ("N=name",
// one per line) rules out '=', '/' and whitespace.
func keyName(key string, i int) string {
	fields := strings.Fields(key)
	if len(fields) >= 3 {
		name := fields[len(fields)-1]
		if !strings.ContainsAny(name, "=/") && !strings.HasPrefix(name, "key-") {
			return name
		}
	}
	return "key-" + strconv.Itoa(i)
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
