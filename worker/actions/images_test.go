package actions

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/worker/internal/docker"
	"github.com/herd-metal/herd/worker/internal/dockertest"
	"github.com/herd-metal/herd/worker/internal/runner"
)

func TestMain(m *testing.M) { os.Exit(dockertest.Main(m.Run)) }

// buildImage does what `make action-images` does for one action.
func buildImage(t *testing.T, d *dockertest.Daemon, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := dockertest.BuildStatic(name, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(name, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644)
	ref := "herd/" + name + ":test"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.BuildDir(ctx, dir, ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

func runImage(t *testing.T, d *dockertest.Daemon, c runner.Container) (int64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := docker.New(docker.Config{Host: d.Host, PullPolicy: docker.PullMissing}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	id, err := r.Create(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Remove(context.Background(), id)
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	code, err := r.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.Logs(ctx, id, func(_, l string) { out.WriteString(l + "\n") })
	return code, out.String()
}

// TestImage2DiskImage: the image streams a disk image from HTTP onto a
// file (standing for the disk) and the file's checksum matches.
func TestImage2DiskImage(t *testing.T) {
	d := dockertest.Get(t)
	ref := buildImage(t, d, "image2disk")
	raw := bytes.Repeat([]byte("herd disk image "), 1<<16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(raw) }))
	defer srv.Close()
	out := t.TempDir()
	code, logs := runImage(t, d, runner.Container{Name: "herd-test-image2disk", Image: ref,
		Env:   []string{"IMG_URL=" + srv.URL + "/disk.img", "DEST_DISK=/out/disk"},
		Binds: []string{out + ":/out"}})
	got, _ := os.ReadFile(filepath.Join(out, "disk"))
	if code != 0 || sha256.Sum256(got) != sha256.Sum256(raw) {
		t.Errorf("exit %d, %d bytes written\n%s", code, len(got), logs)
	}
}

// TestRebootImage: the image asks the worker to reboot through
// /workflow/power; writefile's image starts and explains a missing setting.
func TestRebootAndWritefileImages(t *testing.T) {
	d := dockertest.Get(t)
	ref := buildImage(t, d, "reboot")
	wf := t.TempDir()
	code, logs := runImage(t, d, runner.Container{Name: "herd-test-reboot", Image: ref, Env: []string{"MODE=poweroff"},
		Binds: []string{wf + ":/workflow"}})
	if b, _ := os.ReadFile(filepath.Join(wf, runner.PowerFile)); code != 0 || string(b) != "poweroff\n" {
		t.Errorf("reboot: exit %d, power file %q\n%s", code, b, logs)
	}
	ref = buildImage(t, d, "writefile")
	code, logs = runImage(t, d, runner.Container{Name: "herd-test-writefile", Image: ref})
	if code != 1 || !strings.Contains(logs, "DEST_DISK, FS_TYPE and DEST_PATH must be set") {
		t.Errorf("writefile without settings: exit %d\n%s", code, logs)
	}
}
