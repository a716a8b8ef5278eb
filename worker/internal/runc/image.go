package runc

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/herd-metal/herd/worker/internal/docker"
)

// The image store under Config.StateDir:
//
//	images/<algorithm>-<hex>/rootfs       the flattened filesystem (overlay lower)
//	images/<algorithm>-<hex>/config.json  the image's config file
//	refs/<escaped reference>              the digest the reference was pulled at
//
// An image is unpacked once per digest: a tag pulled again that has not
// moved costs one manifest request.

func (r *Runtime) imageDir(digest v1.Hash) string {
	return filepath.Join(r.cfg.StateDir, "images", digest.Algorithm+"-"+digest.Hex)
}

func (r *Runtime) refFile(ref string) string {
	return filepath.Join(r.cfg.StateDir, "refs", url.PathEscape(ref))
}

// parseRef parses ref; plain HTTP is allowed to the configured registry
// when it is insecure (the OSIE's, as dockerd's --insecure-registry was).
func (r *Runtime) parseRef(ref string) (name.Reference, error) {
	p, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if r.cfg.Insecure && p.Context().RegistryStr() == hostOf(r.cfg.Registry) {
		return name.ParseReference(ref, name.Insecure)
	}
	return p, nil
}

// Pull implements runner.Runtime: it fetches the image's manifest (with
// the registry's credentials when the image comes from the configured
// registry) and unpacks its layers, flattened, unless this digest was
// unpacked before.
func (r *Runtime) Pull(ctx context.Context, img string) error {
	ref := docker.Reference(r.cfg.Registry, img)
	r.pullMu.Lock()
	defer r.pullMu.Unlock()
	if r.cfg.PullPolicy == docker.PullMissing {
		if _, err := r.localImage(ref); err == nil {
			return nil
		}
	}
	p, err := r.parseRef(ref)
	if err != nil {
		return err
	}
	auth := authn.Anonymous
	withAuth := r.cfg.Username != "" && p.Context().RegistryStr() == hostOf(r.cfg.Registry)
	if withAuth {
		auth = authn.FromConfig(authn.AuthConfig{Username: r.cfg.Username, Password: r.cfg.Password})
	}
	log := r.log.With("image", ref)
	log.InfoContext(ctx, "pulling image")
	image, err := remote.Image(p, remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(r.transport),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		return authError(ref, withAuth, err)
	}
	digest, err := image.Digest()
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	dir := r.imageDir(digest)
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		if err := r.unpack(ctx, image, dir); err != nil {
			return authError(ref, withAuth, fmt.Errorf("image %s (%s): %w", ref, digest, err))
		}
		log.InfoContext(ctx, "image unpacked", "digest", digest.String())
	} else {
		log.InfoContext(ctx, "image up to date", "digest", digest.String())
	}
	if err := writeFileAtomic(r.refFile(ref), []byte(digest.String())); err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	return nil
}

// localImage is the unpacked image ref was last pulled at.
func (r *Runtime) localImage(ref string) (string, error) {
	b, err := os.ReadFile(r.refFile(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("image %s is not pulled", ref)
	}
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	digest, err := v1.NewHash(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("image %s: its record %s: %w", ref, r.refFile(ref), err)
	}
	dir := r.imageDir(digest)
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		return "", fmt.Errorf("image %s (%s) is not unpacked: %w", ref, digest, err)
	}
	return dir, nil
}

// unpack writes image's flattened filesystem and config into dir, through
// a temporary directory renamed at the end, so a half-unpacked image is
// never taken for one.
func (r *Runtime) unpack(ctx context.Context, image v1.Image, dir string) error {
	cfg, err := image.ConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return fmt.Errorf("image is for %s, not linux", cfg.OS)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	flat := mutate.Extract(image)
	defer flat.Close()
	if err := extractTar(ctx, flat, rootfs); err != nil {
		return err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("unpacked image: %w", err)
	}
	return nil
}

// imageConfig reads an unpacked image's config.
func imageConfig(dir string) (*v1.ConfigFile, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	return &cfg, nil
}

// extractTar writes a flattened image filesystem (mutate.Extract's stream:
// upper layers first, so a file may come before its directory) under dir.
// Every write goes through an os.Root: a hostile image's "../" names or
// symbolic links cannot reach outside dir. Device nodes are skipped (the
// container's /dev is made by runc, or is the host's).
func extractTar(ctx context.Context, r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	type dirMode struct {
		name string
		mode fs.FileMode
	}
	var dirs []dirMode // applied at the end: a read-only directory still gets its files
	var links []*tar.Header
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layers: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		if name == "." {
			continue
		}
		if !fs.ValidPath(name) {
			return fmt.Errorf("layer entry %q: not a path inside the image", h.Name)
		}
		if parent := path.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("layer entry %q: %w", h.Name, err)
			}
		}
		mode := fs.FileMode(h.Mode).Perm() | tarModeBits(h.Mode)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("layer entry %q: %w", h.Name, err)
			}
			dirs = append(dirs, dirMode{name, mode})
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return fmt.Errorf("layer entry %q: %w", h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("layer entry %q: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("layer entry %q: %w", h.Name, err)
			}
		case tar.TypeLink:
			links = append(links, h) // its target may come later in the stream
			continue
		default: // devices, fifos: not needed by an action's filesystem
			continue
		}
		if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
			return fmt.Errorf("layer entry %q: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			// After chown, which clears the set-id bits.
			if err := root.Chmod(name, mode); err != nil {
				return fmt.Errorf("layer entry %q: %w", h.Name, err)
			}
		}
	}
	for _, h := range links {
		target := path.Clean(strings.TrimPrefix(h.Linkname, "/"))
		if !fs.ValidPath(target) {
			return fmt.Errorf("layer entry %q: link target %q is not inside the image", h.Name, h.Linkname)
		}
		if err := root.Link(target, path.Clean(strings.TrimPrefix(h.Name, "/"))); err != nil {
			return fmt.Errorf("layer entry %q: %w", h.Name, err)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chmod(dirs[i].name, dirs[i].mode); err != nil {
			return fmt.Errorf("layer directory %q: %w", dirs[i].name, err)
		}
	}
	return nil
}

// tarModeBits are the set-id and sticky bits of a tar header's mode.
func tarModeBits(m int64) fs.FileMode {
	var mode fs.FileMode
	if m&04000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&02000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&01000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// resolveUser turns an image's User ("", "uid", "uid:gid", "name",
// "name:group") into ids, names looked up in the image's own /etc/passwd
// and /etc/group.
func resolveUser(rootfs, user string) (specs.User, error) {
	if user == "" {
		return specs.User{}, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, gid, err := lookupID(rootfs, "etc/passwd", u)
	if err != nil {
		return specs.User{}, fmt.Errorf("image user %q: %w", user, err)
	}
	if hasGroup {
		if gid, _, err = lookupID(rootfs, "etc/group", g); err != nil {
			return specs.User{}, fmt.Errorf("image user %q: %w", user, err)
		}
	}
	return specs.User{UID: uid, GID: gid}, nil
}

// lookupID is a numeric id as it is, or the id (and, in passwd, the
// primary group) of a name in the image's file.
func lookupID(rootfs, file, id string) (uint32, uint32, error) {
	if n, err := strconv.ParseUint(id, 10, 32); err == nil {
		return uint32(n), uint32(n), nil
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return 0, 0, err
	}
	defer root.Close()
	b, err := root.ReadFile(file)
	if err != nil {
		return 0, 0, fmt.Errorf("looking up %q: %w", id, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 || f[0] != id {
			continue
		}
		a, err1 := strconv.ParseUint(f[2], 10, 32)
		b := a
		var err2 error
		if len(f) > 3 && file == "etc/passwd" {
			b, err2 = strconv.ParseUint(f[3], 10, 32)
		}
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("/%s: bad entry for %q", file, id)
		}
		return uint32(a), uint32(b), nil
	}
	return 0, 0, fmt.Errorf("no %q in the image's /%s", id, file)
}

// authError says plainly that the registry refused the credentials, and
// which registry (as the docker runtime does). Other errors name the image.
func authError(ref string, withAuth bool, err error) error {
	var terr *transport.Error
	if !errors.As(err, &terr) || (terr.StatusCode != http.StatusUnauthorized && !hasCode(terr, transport.UnauthorizedErrorCode)) {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	reg := ref
	if p, perr := name.ParseReference(ref); perr == nil {
		reg = p.Context().RegistryStr()
	}
	// Both spellings: the flags, and the OSIE's kernel command line.
	hint := "no credentials were sent for it: set --registry-user and --registry-password, and --registry to it (in the OSIE: herd.registry_user, herd.registry_pass, herd.registry)"
	if withAuth {
		hint = "the user or password is wrong (--registry-user, --registry-password; in the OSIE: herd.registry_user, herd.registry_pass)"
	}
	return fmt.Errorf("registry %s: authentication failed (unauthorized) pulling %s: %s: %w", reg, ref, hint, err)
}

func hasCode(e *transport.Error, code transport.ErrorCode) bool {
	for _, d := range e.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// hostOf is the host[:port] of a registry setting.
func hostOf(registry string) string {
	h, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(registry, "https://"), "http://"), "/")
	return h
}

// writeFileAtomic replaces name with data (a temporary file renamed).
func writeFileAtomic(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
