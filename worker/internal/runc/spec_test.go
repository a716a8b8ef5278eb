package runc

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/herd-metal/herd/worker/internal/runner"
)

func TestProcessArgs(t *testing.T) {
	for _, tc := range []struct {
		name       string
		entrypoint []string
		cmd        []string
		command    []string
		want       []string
		wantErr    bool
	}{
		{"entrypoint and the action's command", []string{"/e"}, []string{"default"}, []string{"a", "b"}, []string{"/e", "a", "b"}, false},
		{"entrypoint and the image's Cmd", []string{"/e"}, []string{"default"}, nil, []string{"/e", "default"}, false},
		{"no entrypoint: the command alone", nil, []string{"default"}, []string{"/bin/x"}, []string{"/bin/x"}, false},
		{"no entrypoint, no command: Cmd", nil, []string{"/bin/sh"}, nil, []string{"/bin/sh"}, false},
		{"nothing to run", nil, nil, nil, nil, true},
	} {
		got, err := processArgs(v1.Config{Entrypoint: tc.entrypoint, Cmd: tc.cmd}, tc.command)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	for _, tc := range []struct {
		name          string
		image, action []string
		want          []string
	}{
		{"action overrides by name, order kept", []string{"A=1", "PATH=/x", "B=2", "HOME=/h"}, []string{"B=3", "C=4"},
			[]string{"A=1", "PATH=/x", "B=3", "HOME=/h", "C=4"}},
		{"defaults when neither sets PATH or HOME", nil, []string{"A="}, []string{"A=", defaultPath, "HOME=/root"}},
		{"the action's PATH wins", []string{"PATH=/img"}, []string{"PATH=/act", "HOME=/a"}, []string{"PATH=/act", "HOME=/a"}},
	} {
		if got := mergeEnv(tc.image, tc.action, "/root"); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestBindMount(t *testing.T) {
	for _, tc := range []struct {
		bind    string
		want    specs.Mount
		wantErr string
	}{
		{"/var/lib/x:/workflow", specs.Mount{Destination: "/workflow", Type: "bind", Source: "/var/lib/x", Options: []string{"rbind", "rw"}}, ""},
		{"/dev:/dev:ro", specs.Mount{Destination: "/dev", Type: "bind", Source: "/dev", Options: []string{"rbind", "ro"}}, ""},
		{"/a/../b/:/c/:rw,z", specs.Mount{Destination: "/c", Type: "bind", Source: "/b", Options: []string{"rbind", "rw"}}, ""},
		{"data:/data", specs.Mount{}, "named volumes"},
		{"/a:rel", specs.Mount{}, "container path must be absolute"},
		{"/a", specs.Mount{}, "want host-path:container-path"},
		{"/a:/b:rx", specs.Mount{}, `unknown option "rx"`},
	} {
		got, err := bindMount(tc.bind)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want an error saying %q", tc.bind, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Destination != tc.want.Destination || got.Source != tc.want.Source || !slices.Equal(got.Options, tc.want.Options) {
			t.Errorf("%q: %+v, %v; want %+v", tc.bind, got, err, tc.want)
		}
	}
}

func namespaces(s *specs.Spec) []specs.LinuxNamespaceType {
	var n []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		n = append(n, ns.Type)
	}
	return n
}

func mountAt(s *specs.Spec, dst string) (specs.Mount, bool) {
	for _, m := range s.Mounts {
		if m.Destination == dst {
			return m, true
		}
	}
	return specs.Mount{}, false
}

func TestBuildSpec(t *testing.T) {
	img := v1.Config{Entrypoint: []string{"/e"}}
	c := runner.Container{Name: "x", Labels: map[string]string{"herd.workflow": "w1"}, Binds: []string{"/h:/c:ro"}}
	const all = 1<<41 - 1
	plain, err := buildSpec(specInput{Container: c, Image: img, RootFS: "/b/rootfs", Bounding: all})
	if err != nil {
		t.Fatal(err)
	}
	c.Privileged, c.PidMode = true, "host"
	priv, err := buildSpec(specInput{Container: c, Image: img, RootFS: "/b/rootfs", Bounding: all})
	if err != nil {
		t.Fatal(err)
	}
	// Never a network or UTS namespace: the host's network, as --network host.
	if got := namespaces(plain); !slices.Equal(got, []specs.LinuxNamespaceType{specs.MountNamespace, specs.IPCNamespace, specs.PIDNamespace}) {
		t.Errorf("namespaces: %v", got)
	}
	if got := namespaces(priv); !slices.Equal(got, []specs.LinuxNamespaceType{specs.MountNamespace, specs.IPCNamespace}) {
		t.Errorf("namespaces with pid host: %v", got)
	}
	if len(plain.Process.Capabilities.Bounding) != len(defaultCaps) || len(priv.Process.Capabilities.Bounding) != len(allCaps) {
		t.Errorf("capabilities: %d unprivileged, %d privileged", len(plain.Process.Capabilities.Bounding), len(priv.Process.Capabilities.Bounding))
	}
	if len(plain.Linux.MaskedPaths) == 0 || len(priv.Linux.MaskedPaths) != 0 || len(priv.Linux.ReadonlyPaths) != 0 || plain.Linux.Seccomp != nil || priv.Linux.Seccomp != nil {
		t.Errorf("masked/readonly paths: %v / %v", plain.Linux.MaskedPaths, priv.Linux.ReadonlyPaths)
	}
	if m, _ := mountAt(priv, "/dev"); m.Type != "bind" || m.Source != "/dev" {
		t.Errorf("privileged /dev: %+v", m)
	}
	if m, _ := mountAt(priv, "/sys"); !slices.Contains(m.Options, "rw") {
		t.Errorf("privileged /sys: %+v", m)
	}
	if m, _ := mountAt(plain, "/sys"); !slices.Contains(m.Options, "ro") {
		t.Errorf("unprivileged /sys: %+v", m)
	}
	if m, ok := mountAt(plain, "/c"); !ok || !slices.Contains(m.Options, "ro") {
		t.Errorf("bind: %+v", m)
	}
	if plain.Annotations["herd.workflow"] != "w1" || plain.Hostname != "" || plain.Process.Cwd != "/" || plain.Process.Terminal {
		t.Errorf("annotations %v, hostname %q, cwd %q, terminal %v", plain.Annotations, plain.Hostname, plain.Process.Cwd, plain.Process.Terminal)
	}
	// Without CAP_SYS_RESOURCE (24) in the worker's own set: none for the container.
	c.PidMode = ""
	less, err := buildSpec(specInput{Container: c, Image: img, RootFS: "/b/rootfs", Bounding: all &^ (1 << 24)})
	if err != nil {
		t.Fatal(err)
	}
	if got := less.Process.Capabilities.Bounding; len(got) != len(allCaps)-1 || slices.Contains(got, "CAP_SYS_RESOURCE") {
		t.Errorf("privileged, the worker lacking CAP_SYS_RESOURCE: %v", got)
	}
	if _, err := buildSpec(specInput{Container: runner.Container{PidMode: "container:x"}, Image: img}); err == nil {
		t.Error("pid mode container:x taken")
	}
}

// TestExtractTarHostile: names and links that point outside the rootfs
// write nothing outside it.
func TestExtractTarHostile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []tar.Header
	}{
		{"dot-dot name", []tar.Header{{Name: "../escaped", Typeflag: tar.TypeReg}}},
		{"through an absolute symlink", []tar.Header{{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/OUT"}, {Name: "link/escaped", Typeflag: tar.TypeReg}}},
		{"through a relative symlink", []tar.Header{{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../../OUT"}, {Name: "link/escaped", Typeflag: tar.TypeReg}}},
		{"hard link out", []tar.Header{{Name: "hard", Typeflag: tar.TypeLink, Linkname: "../../OUT/target"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			out := filepath.Join(top, "OUT")
			if err := os.Mkdir(out, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(out, "target"), []byte("t"), 0o644); err != nil {
				t.Fatal(err)
			}
			rootfs := filepath.Join(top, "a", "rootfs")
			if err := os.MkdirAll(rootfs, 0o755); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range tc.entries {
				h.Mode = 0o644
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
			}
			tw.Close()
			err := extractTar(context.Background(), &buf, rootfs)
			if err == nil {
				t.Error("the hostile layer was unpacked without an error")
			}
			for _, p := range []string{filepath.Join(top, "escaped"), filepath.Join(top, "a", "escaped"), filepath.Join(out, "escaped")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s written outside the rootfs", p)
				}
			}
		})
	}
}
