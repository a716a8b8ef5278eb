// Command writefile is herd's writefile action: it writes one file into a
// filesystem on a partition of the machine being provisioned (mount,
// write with mode/uid/gid, unmount), e.g. a network configuration or
// cloud-init seed for the installed OS.
//
// Environment (Tinkerbell hub's names):
//
//	DEST_DISK     the partition, e.g. /dev/sda1 (required)
//	FS_TYPE       its filesystem, e.g. ext4 or vfat (required)
//	DEST_PATH     the file's absolute path inside that filesystem (required)
//	CONTENTS      the file's contents, or
//	CONTENTS_URL  a URL to fetch them from, such as the metadata service
//	              (http://METADATA:50061/2009-04-04/user-data); herd's addition
//	MODE          octal file mode (default 0644)
//	UID, GID      owner (default 0)
//	DIRMODE       octal mode of directories created on the way (default 0755)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	c, err := configFrom(os.LookupEnv)
	if err == nil {
		err = run(context.Background(), c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "writefile:", err)
		os.Exit(1)
	}
}

type config struct {
	disk, fsType, dest string
	contents           []byte
	url                string
	mode, dirMode      os.FileMode
	uid, gid           int
}

func configFrom(lookup func(string) (string, bool)) (config, error) {
	getenv := func(k string) string { v, _ := lookup(k); return v }
	c := config{disk: getenv("DEST_DISK"), fsType: getenv("FS_TYPE"), dest: getenv("DEST_PATH"),
		url: getenv("CONTENTS_URL"), mode: 0o644, dirMode: 0o755}
	if c.disk == "" || c.fsType == "" || c.dest == "" {
		return c, errors.New("DEST_DISK, FS_TYPE and DEST_PATH must be set")
	}
	if !path.IsAbs(c.dest) || strings.Contains("/"+c.dest+"/", "/../") {
		return c, fmt.Errorf("DEST_PATH %q: want an absolute path without ..", c.dest)
	}
	v, hasContents := lookup("CONTENTS")
	switch {
	case hasContents && c.url != "":
		return c, errors.New("CONTENTS and CONTENTS_URL are both set: give one")
	case !hasContents && c.url == "":
		return c, errors.New("give the file's contents in CONTENTS or CONTENTS_URL")
	}
	c.contents = []byte(v)
	var err error
	for _, f := range []struct {
		name string
		to   *os.FileMode
	}{{"MODE", &c.mode}, {"DIRMODE", &c.dirMode}} {
		if s := getenv(f.name); s != "" {
			m, perr := strconv.ParseUint(s, 8, 32)
			if perr != nil || m > 0o7777 {
				return c, fmt.Errorf("%s=%q: want an octal mode such as 0644", f.name, s)
			}
			*f.to = os.FileMode(m)
		}
	}
	for _, f := range []struct {
		name string
		to   *int
	}{{"UID", &c.uid}, {"GID", &c.gid}} {
		if s := getenv(f.name); s != "" {
			if *f.to, err = strconv.Atoi(s); err != nil || *f.to < 0 {
				return c, fmt.Errorf("%s=%q: want a number", f.name, s)
			}
		}
	}
	return c, nil
}

func run(ctx context.Context, c config) error {
	if c.url != "" {
		b, err := fetch(ctx, c.url)
		if err != nil {
			return err
		}
		c.contents = b
	}
	// The image is FROM scratch: there may be no /tmp. Mount under / then.
	base := os.TempDir()
	if _, err := os.Stat(base); err != nil {
		base = "/"
	}
	mnt, err := os.MkdirTemp(base, "writefile")
	if err != nil {
		return err
	}
	defer os.Remove(mnt)
	if err := syscall.Mount(c.disk, mnt, c.fsType, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s): %w", c.disk, c.fsType, err)
	}
	werr := writeFile(mnt, c)
	if err := syscall.Unmount(mnt, 0); err != nil {
		return errors.Join(werr, fmt.Errorf("unmount %s: %w", c.disk, err))
	}
	if werr != nil {
		return werr
	}
	fmt.Printf("wrote %d bytes to %s on %s\n", len(c.contents), c.dest, c.disk)
	return nil
}

// writeFile writes c.contents at c.dest under root, creating directories
// on the way, and sets mode and owner.
func writeFile(root string, c config) error {
	full := filepath.Join(root, filepath.FromSlash(c.dest))
	if err := mkdirs(root, filepath.Dir(full), c.dirMode, c.uid, c.gid); err != nil {
		return err
	}
	tmp := full + ".writefile"
	if err := os.WriteFile(tmp, c.contents, c.mode); err != nil {
		return fmt.Errorf("write %s: %w", c.dest, err)
	}
	if err := os.Chmod(tmp, c.mode); err != nil { // WriteFile's mode passes the umask
		return err
	}
	if err := os.Chown(tmp, c.uid, c.gid); err != nil {
		return fmt.Errorf("chown %s: %w", c.dest, err)
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = errors.Join(f.Sync(), f.Close())
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, full)
}

// mkdirs creates dir (under root) and its missing parents with mode and
// owner; existing directories are left alone.
func mkdirs(root, dir string, mode os.FileMode, uid, gid int) error {
	if dir == root || !strings.HasPrefix(dir, root) {
		return nil
	}
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := mkdirs(root, filepath.Dir(dir), mode, uid, gid); err != nil {
		return err
	}
	if err := os.Mkdir(dir, mode); err != nil && !os.IsExist(err) {
		return err
	}
	if err := os.Chmod(dir, mode); err != nil {
		return err
	}
	return os.Chown(dir, uid, gid)
}

func fetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("CONTENTS_URL %q: %w", url, err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("CONTENTS_URL: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("CONTENTS_URL %s: HTTP status %s", url, res.Status)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("CONTENTS_URL %s: %w", url, err)
	}
	return b, nil
}
