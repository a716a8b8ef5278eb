package transport

import (
	"io"
	"net/http"
	"time"
)

// deadlines gives each HTTP request the deadlines it needs. http.Server's
// ReadTimeout bounds reading a request, headers and body, which stops a
// client trickling a body; its WriteTimeout would also end every response
// that lasts longer, REST streams included (a workflow's events, watched).
// So here:
//   - once the body is read (at once for a request without one), the read
//     deadline is lifted: net/http's background read, which notices a client
//     going away, would otherwise cancel a long response when it passes;
//   - each write of the response gets write from the moment it starts: a
//     stream may last as long as it keeps going, but a client that stops
//     reading is cut off after write.
func deadlines(next http.Handler, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		lift := func() { _ = rc.SetReadDeadline(time.Time{}) }
		if r.Body == nil || r.Body == http.NoBody {
			lift()
		} else {
			r.Body = &onEOF{ReadCloser: r.Body, fn: lift}
		}
		if write > 0 {
			w = &writeDeadline{ResponseWriter: w, rc: rc, d: write}
		}
		next.ServeHTTP(w, r)
	})
}

// onEOF calls fn once, when the body has been read to its end.
type onEOF struct {
	io.ReadCloser
	fn   func()
	done bool
}

func (b *onEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		b.fn()
	}
	return n, err
}

// writeDeadline renews the connection's write deadline before each write
// and flush.
type writeDeadline struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *writeDeadline) renew() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

func (w *writeDeadline) WriteHeader(code int) {
	w.renew()
	w.ResponseWriter.WriteHeader(code)
}

func (w *writeDeadline) Write(p []byte) (int, error) {
	w.renew()
	return w.ResponseWriter.Write(p)
}

// Flush implements http.Flusher (the REST gateway streams with it).
func (w *writeDeadline) Flush() {
	w.renew()
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *writeDeadline) Unwrap() http.ResponseWriter { return w.ResponseWriter }
