//go:build bench

package bench

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// Baselines are the floor of what a Go server can do here: the same bytes
// and headers as herd-metadata's answers, with no lookup, no routing and
// no metrics, served by the benchmark's own process (idle while wrk runs,
// same GOMAXPROCS) with net/http and with fasthttp. They show what the
// serving library costs on this machine apart from herd-metadata's work.
const (
	baseNetHTTP  = "net/http (bare)"
	baseFastHTTP = "fasthttp (bare)"
)

// contentType is what herd-metadata sends for path.
func contentType(path string) string {
	if path == "/metadata" {
		return "application/json"
	}
	return "text/plain; charset=utf-8"
}

// startBaselines serves bodies on two loopback ports until the test ends
// and returns their base URLs by name.
func startBaselines(t *testing.T, bodies map[string][]byte) map[string]string {
	t.Helper()
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	type answer struct {
		body       []byte
		ct, length []string
	}
	answers := map[string]answer{}
	for p, b := range bodies {
		answers[p] = answer{b, []string{contentType(p)}, []string{strconv.Itoa(len(b))}}
	}
	nosniff := []string{"nosniff"}
	std := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h["Content-Type"], h["Content-Length"], h["X-Content-Type-Options"] = a.ct, a.length, nosniff
		_, _ = w.Write(a.body)
	})}
	fast := &fasthttp.Server{NoDefaultServerHeader: true, NoDefaultContentType: true, Handler: func(ctx *fasthttp.RequestCtx) {
		a, ok := answers[string(ctx.Path())]
		if !ok {
			ctx.NotFound()
			return
		}
		ctx.Response.Header.SetContentType(a.ct[0])
		ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
		ctx.Response.SetBody(a.body)
	}}
	lnStd, lnFast := listen(), listen()
	go func() { _ = std.Serve(lnStd) }()
	go func() { _ = fast.Serve(lnFast) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = std.Shutdown(ctx)
		_ = fast.ShutdownWithContext(ctx)
	})
	urls := map[string]string{baseNetHTTP: "http://" + lnStd.Addr().String(), baseFastHTTP: "http://" + lnFast.Addr().String()}
	for _, base := range urls {
		for p, b := range bodies {
			if got := mustGet(t, base+p); string(got) != string(b) {
				t.Fatalf("baseline %s%s = %q", base, p, got)
			}
		}
	}
	return urls
}
