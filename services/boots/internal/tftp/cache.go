package tftp

import (
	"bytes"
	"io"
	"os"
	"sync"
	"time"
)

// fileCache keeps boot files in memory: in a boot storm every machine
// reads the same few files, and a block served from memory costs no read
// syscall. An entry is used only while the file's size and modification
// time are those it was read with; the total stays under a bound.
type fileCache struct {
	maxFile, maxTotal int64

	mu    sync.Mutex
	files map[string]cachedFile // by path
	total int64
}

type cachedFile struct {
	size int64
	mod  time.Time
	data []byte
}

// reader returns f's content as a ReaderAt: from memory when cached or
// now cached, else f itself.
func (c *fileCache) reader(f *os.File) io.ReaderAt {
	st, err := f.Stat()
	if err != nil || st.Size() > c.maxFile {
		return f
	}
	c.mu.Lock()
	e, ok := c.files[f.Name()]
	c.mu.Unlock()
	if ok && e.size == st.Size() && e.mod.Equal(st.ModTime()) {
		return bytes.NewReader(e.data)
	}
	data := make([]byte, st.Size())
	if n, _ := f.ReadAt(data, 0); n != len(data) {
		return f // shrunk since Stat: read it as it is
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]cachedFile{}
	}
	old := c.files[f.Name()]
	if c.total-int64(len(old.data))+st.Size() > c.maxTotal {
		return bytes.NewReader(data) // this transfer only
	}
	c.total += st.Size() - int64(len(old.data))
	c.files[f.Name()] = cachedFile{size: st.Size(), mod: st.ModTime(), data: data}
	return bytes.NewReader(data)
}
