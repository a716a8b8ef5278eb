package ec2

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/herd-metal/herd/proto/hardware"
)

// kind says how a field's values become files of the tree.
type kind int

const (
	// leaf: one file, the values one per line.
	leaf kind = iota
	// keyList: EC2's public-keys layout: the directory lists "N=name" and
	// each key is the file N/openssh-key.
	keyList
)

// field is one row of the meta-data table: a path under meta-data/ and
// the machine's value(s) there. A field whose value is empty is absent for
// that machine: it is not listed and answers 404, as on EC2 (cloud-init
// gives up on a whole crawl when a listed entry fails).
type field struct {
	path  string
	kind  kind
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
	{"instance-id", leaf, one(func(in *Instance) string { return in.ID })},
	{"hostname", leaf, one(func(in *Instance) string { return in.Hostname })},
	{"local-hostname", leaf, one(func(in *Instance) string { return in.Hostname })},
	{"local-ipv4", leaf, one(func(in *Instance) string { return in.LocalIPv4 })},
	{"public-ipv4", leaf, one(func(in *Instance) string { return in.PublicIPv4 })},
	{"public-ipv6", leaf, one(func(in *Instance) string { return in.PublicIPv6 })},
	{"public-keys", keyList, func(in *Instance) []string { return in.SSHKeys }},
	{"placement/availability-zone", leaf, one(func(in *Instance) string { return in.Facility })},
	{"plan", leaf, one(func(in *Instance) string { return in.Plan })},
	{"tags", leaf, func(in *Instance) []string { return in.Tags }},
	{"operating-system/slug", leaf, one(func(in *Instance) string { return in.OSSlug })},
	{"operating-system/distro", leaf, one(func(in *Instance) string { return in.OSDistro })},
	{"operating-system/version", leaf, one(func(in *Instance) string { return in.OSVersion })},
}

// Versions are the EC2 API versions served; "latest" is the same tree.
var Versions = []string{"2009-04-04", "latest"}

// Labels are the route labels of the metrics, one per table row plus the
// fixed routes: a bounded set, whatever paths callers send.
func Labels() []string {
	out := []string{LabelRoot, LabelVersion, LabelMetaData, LabelUserData, LabelMetadataJSON}
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

// Route labels of the routes outside the table.
const (
	LabelRoot         = "/"
	LabelVersion      = "version"
	LabelMetaData     = "meta-data"
	LabelUserData     = "user-data"
	LabelMetadataJSON = "metadata"
)

// Response is a ready answer: its body, the Content-Length header value
// and the metrics label of its route.
type Response struct {
	Body          []byte
	ContentLength []string
	ContentType   []string
	Label         string
	// Dir: a listing, also served with a trailing slash.
	Dir bool
}

var (
	textPlain = []string{"text/plain; charset=utf-8"}
	appJSON   = []string{"application/json"}
)

func newResponse(body, label string, dir bool, ct []string) *Response {
	return &Response{
		Body:          []byte(body),
		ContentLength: []string{strconv.Itoa(len(body))},
		ContentType:   ct,
		Label:         label,
		Dir:           dir,
	}
}

// Prepared is everything herd-metadata answers one machine, computed when
// its record changes.
type Prepared struct {
	// ID is the hardware id, for logs.
	ID string
	// Addresses are the machine's addresses from its metadata document
	// (see Addresses).
	Addresses []netip.Addr
	// tree maps a path under a version, without slashes at either end
	// ("" is the version's root, "meta-data/hostname" a file), to its answer.
	tree map[string]*Response
	// root lists the versions.
	root *Response
	// metadata is the whole metadata document.
	metadata *Response
}

// Lookup returns the answer at path under a version ("meta-data/hostname";
// "" for the version root). dirSlash says the request ended in "/", which
// only a directory accepts.
func (p *Prepared) Lookup(path string, dirSlash bool) (*Response, bool) {
	r, ok := p.tree[path]
	if !ok || (dirSlash && !r.Dir) {
		return nil, false
	}
	return r, true
}

// Root is the listing of the versions.
func (p *Prepared) Root() *Response { return p.root }

// Metadata is the whole instance metadata document, JSON.
func (p *Prepared) Metadata() *Response { return p.metadata }

// Prepare computes every answer for hw. It is the inventory's derive hook:
// it runs once per record change, never per request.
func Prepare(hw *hardware.Hardware) *Prepared {
	in := FromHardware(hw)
	p := &Prepared{ID: hw.GetId(), Addresses: Addresses(hw), tree: map[string]*Response{}}

	files := map[string]*Response{}
	children := map[string]map[string]bool{} // dir -> child name -> is dir
	listings := map[string]string{}          // dirs whose listing is not derived
	addFile := func(path, body, label string) {
		files[path] = newResponse(body, label, false, textPlain)
		segs := strings.Split(path, "/")
		for i := range segs {
			dir := strings.Join(segs[:i], "/")
			if children[dir] == nil {
				children[dir] = map[string]bool{}
			}
			children[dir][segs[i]] = i < len(segs)-1
		}
	}

	for _, f := range metaData {
		vals := f.value(in)
		if len(vals) == 0 {
			continue
		}
		path, label := "meta-data/"+f.path, "meta-data/"+f.path
		switch f.kind {
		case leaf:
			addFile(path, strings.Join(vals, "\n"), label)
		case keyList:
			var lines []string
			used := map[string]bool{}
			for i, key := range vals {
				n := strconv.Itoa(i)
				addFile(path+"/"+n+"/openssh-key", key, label)
				name := keyName(key, i)
				if used[name] { // clients key the keys by name
					name = "key-" + n
				}
				used[name] = true
				lines = append(lines, n+"="+name)
			}
			listings[path] = strings.Join(lines, "\n")
		}
	}
	if in.UserData != "" {
		addFile("user-data", in.UserData, LabelUserData)
	}

	for path, r := range files {
		p.tree[path] = r
	}
	for dir, kids := range children {
		label := dirLabel(dir)
		body, ok := listings[dir]
		if !ok {
			names := make([]string, 0, len(kids))
			for name, isDir := range kids {
				if isDir {
					name += "/"
				}
				names = append(names, name)
			}
			sort.Strings(names)
			body = strings.Join(names, "\n")
		}
		p.tree[dir] = newResponse(body, label, true, textPlain)
	}
	if _, ok := p.tree[""]; !ok { // a record with no values at all
		p.tree[""] = newResponse("", LabelVersion, true, textPlain)
	}
	p.root = newResponse(strings.Join(Versions, "\n"), LabelRoot, true, textPlain)

	doc := strings.TrimSpace(hw.GetMetadata())
	if doc == "" {
		doc = "{}"
	}
	p.metadata = newResponse(doc, LabelMetadataJSON, false, appJSON)
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
