// Package runctest makes the images the runc runtime's tests pull: the
// worker's test program (worker/internal/testprog) and the runc tests'
// probe, as two layers pushed to a test registry (registrytest).
package runctest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/herd-metal/herd/worker/internal/dockertest"
)

// programs builds testprog and the probe (static) for this test.
func programs(t testing.TB) map[string][]byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	dir := t.TempDir()
	out := map[string][]byte{}
	for file, pkg := range map[string]string{
		"testprog": filepath.Join(filepath.Dir(here), "..", "..", "testprog"),
		"probe":    filepath.Join(filepath.Dir(here), "..", "testdata", "probe"),
	} {
		bin := filepath.Join(dir, file)
		if err := dockertest.BuildStatic(pkg, bin); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		out[file] = b
	}
	return out
}

// Layer is a layer of files (name -> content; a name ending in / is a
// directory), every file mode 0755.
func Layer(t testing.TB, files map[string][]byte) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		h := &tar.Header{Name: n, Mode: 0o755, Typeflag: tar.TypeReg, Size: int64(len(files[n]))}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Images are the test images by entrypoint: /testprog and /probe, with
// the same two layers: the programs and /etc/removed, then a layer that
// whites /etc/removed out and adds /etc/kept. Their config sets Cmd
// ["echo", "from", "image"], Env IMAGE_VAR=image, SHARED=image, PATH=/
// and WorkingDir /tmp.
func Images(t testing.TB) map[string]v1.Image {
	t.Helper()
	p := programs(t)
	base := Layer(t, map[string][]byte{
		"testprog": p["testprog"], "probe": p["probe"],
		"etc/": nil, "etc/removed": []byte("x"), "tmp/": nil, "workflow/": nil, "proc/": nil, "sys/": nil, "dev/": nil,
	})
	top := Layer(t, map[string][]byte{"etc/.wh.removed": nil, "etc/kept": []byte("y")})
	out := map[string]v1.Image{}
	for _, entrypoint := range []string{"/testprog", "/probe"} {
		img, err := mutate.AppendLayers(empty.Image, base, top)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", runtime.GOARCH
		cf.Config = v1.Config{
			Entrypoint: []string{entrypoint},
			Cmd:        []string{"echo", "from", "image"},
			Env:        []string{"IMAGE_VAR=image", "SHARED=image", "PATH=/"},
			WorkingDir: "/tmp",
		}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		out[entrypoint] = img
	}
	return out
}

// Insecure is a Push option for a TLS registry whose CA is not trusted.
func Insecure() remote.Option {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a test registry
	return remote.WithTransport(t)
}

// Push pushes img as addr/repo (with basic auth when user is set).
func Push(t testing.TB, addr, repo string, img v1.Image, user, password string, opts ...remote.Option) {
	t.Helper()
	ref, err := name.ParseReference(addr + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	auth := authn.Anonymous
	if user != "" {
		auth = &authn.Basic{Username: user, Password: password}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := remote.Write(ref, img, append([]remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}, opts...)...); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}
