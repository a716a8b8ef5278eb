package httpd

import (
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// osieFiles serves the regular files under root (/osie/): kernels,
// initramfs and OS images. Opening through os.Root keeps every name,
// symlinks included, inside the directory; directories are not listed.
// The file reaches http.ServeContent as an *os.File, so that the
// connection's ReadFrom can hand it to sendfile (http.FileServerFS wraps
// files in a type sendfile does not take).
type osieFiles struct{ root *os.Root }

func (d osieFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/osie/")
	if !fileName(name) {
		http.Error(w, "osie: no such file", http.StatusNotFound)
		return
	}
	f, err := d.root.Open(name)
	if err != nil {
		http.Error(w, "osie: no such file", http.StatusNotFound)
		return
	}
	defer f.Close()
	serveFile(w, r, f)
}

// fileName says whether name may name a file under a served directory:
// a clean relative slash path, without a NUL or backslash, no element
// starting with a dot (no "..", no hidden files).
func fileName(name string) bool {
	if name == "" || !fs.ValidPath(name) || strings.ContainsAny(name, "\\\x00") {
		return false
	}
	for _, e := range strings.Split(name, "/") {
		if strings.HasPrefix(e, ".") {
			return false
		}
	}
	return true
}

// serveFile answers r with f, a regular file (anything else is a 404):
// GET and HEAD, Range (single, suffix and multiple ranges; 416 past the
// end), If-Range, If-None-Match with the file's ETag and
// If-Modified-Since, by http.ServeContent.
func serveFile(w http.ResponseWriter, r *http.Request, f *os.File) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	if ranges := r.Header.Get("Range"); ranges != "" && rangeCount(ranges) > maxRanges {
		// Many small ranges cost a multipart header each: serve the
		// whole file instead, as RFC 9110 (14.2) lets a server do.
		r.Header.Del("Range")
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	h := w.Header()
	h.Set("ETag", etag(st.Size(), st.ModTime(), ino))
	if h.Get("Content-Type") == "" {
		ct := mime.TypeByExtension(path.Ext(st.Name()))
		if ct == "" {
			ct = "application/octet-stream" // no sniffing: it would read the file's start first
		}
		h.Set("Content-Type", ct)
	}
	http.ServeContent(w, r, st.Name(), st.ModTime(), f)
}

// maxRanges is the most ranges one request gets as a multipart answer.
const maxRanges = 16

// rangeCount is how many ranges a Range header lists (an upper bound:
// ServeContent parses and checks them).
func rangeCount(h string) int { return strings.Count(h, ",") + 1 }

// etag is a strong validator of a file's content: it changes when the
// file is rewritten (size, modification time) or replaced by another
// (inode; a rename keeping the time and size).
func etag(size int64, mtime time.Time, ino uint64) string {
	return `"` + strconv.FormatInt(size, 16) + "-" + strconv.FormatInt(mtime.UnixNano(), 16) + "-" + strconv.FormatUint(ino, 16) + `"`
}
