package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// up runs the whole sandbox. ok is the verdict: the workflow succeeded,
// the disk holds the image and the installed OS reported the host name.
func (sb *sandbox) up(ctx context.Context) (bool, error) {
	o := sb.opts
	ms, err := newMachines(o.machines, o.hostname, o.uefi, o.ovh)
	if err != nil {
		return false, err
	}
	if o.power == powerIPMI {
		withBMCs(ms)
	}
	if netnsExists() || exists(sb.dir) {
		sb.stage("removing what a previous run left (%s, namespace %s)", sb.dir, nsName)
		if err := sb.down(); err != nil {
			return false, err
		}
	}
	for _, d := range []string{"pids", "logs", "www", vmDirName, "server", "registry"} {
		if err := os.MkdirAll(filepath.Join(sb.dir, d), 0o755); err != nil {
			return false, err
		}
	}
	// down reads it, whatever --netns it is given.
	if err := os.WriteFile(filepath.Join(sb.dir, netnsFile), []byte(nsName+"\n"), 0o644); err != nil {
		return false, err
	}
	bin := func(name string) string { return filepath.Join(o.repo, "bin", name) }

	// 1. Build.
	if o.build {
		sb.stage("building: make build osie osimage (log: %s)", sb.logPath("build"))
		if err := sb.runLogged(ctx, "build", nil, "make", "-C", o.repo, "build", "osie", "osimage"); err != nil {
			return false, err
		}
	}
	for _, f := range []string{bin("herd-server"), bin("herd"), bin("herd-boots"), bin("herd-metadata"), bin("herd-bmc"),
		bin("osie/vmlinuz"), bin("osie/initramfs.img"), bin("osimage/disk.img.gz"), bin("osimage/disk.img")} {
		if !exists(f) {
			return false, fmt.Errorf("%s is missing: run make build osie osimage (or sandbox without --build=false)", f)
		}
	}

	// 2. The network.
	sb.stage("network namespace %s: bridge %s %s/%d, a tap for each of %d VM(s)", nsName, bridge, hostIP, prefixLen, len(ms))
	if err := makeNetns(ms); err != nil {
		return false, err
	}
	if o.ovh {
		sb.stage("provider network (OVH): bridge %s %s/%d, dnsmasq DHCP+TFTP handing iPXE the provider script %s", providerBridge, providerIP, prefixLen, providerScriptName)
		if err := sb.startProvider(ctx); err != nil {
			return false, err
		}
		sb.say("%s", strings.ReplaceAll(strings.TrimSpace(providerScript(bootsHTTPHost())), "\n", "\n            "))
	}
	bridges := []string{bridge}
	if o.ovh {
		bridges = append(bridges, providerBridge)
	}
	sb.stage("IPv6 router advertisements on %s that offer nothing, so iPXE does not wait ~16 s for a router", strings.Join(bridges, ", "))
	if err := advertiseRouters(ctx, bridges, sb.say); err != nil {
		return false, err
	}

	// 3. The services, started one by one, or by the operator's deploy
	// path; www is where herd-boots serves /osie/ from.
	var clientEnv []string
	www, tag := filepath.Join(sb.dir, "www"), actionsTag
	if o.stack == stackCompose {
		www = filepath.Join(sb.dir, deployStateName, "webroot", "osie")
		if clientEnv, tag, err = sb.startCompose(ctx); err != nil {
			return false, err
		}
		if err := linkOrCopy(bin("osimage/disk.img.gz"), filepath.Join(www, "disk.img.gz")); err != nil {
			return false, err
		}
		sb.say("disk.img.gz put in %s beside the OSIE, for image2disk", www)
	} else if clientEnv, err = sb.startProcesses(ctx, www); err != nil {
		return false, err
	}

	herd := func(stdin string, args ...string) (string, error) { return sb.herd(ctx, clientEnv, stdin, args...) }
	if o.power == powerIPMI {
		// Each VM's BMC, and their credential stored (sealed) in herd.
		pw, err := randomToken()
		if err != nil {
			return false, err
		}
		// IPMI passwords hold 16 bytes (20 with IPMI 2.0): 16 hex digits.
		sb.bmcPassword = pw[:16]
		sb.addSecret("the BMC password", sb.bmcPassword)
		if err := sb.startBMCs(ctx, ms, sb.bmcPassword); err != nil {
			return false, err
		}
		if _, err := herd(sb.bmcPassword+"\n", "bmc", "credential", "set", bmcCredential, "--username", bmcUser, "--password-file", "-"); err != nil {
			return false, err
		}
	}

	// 4. The machines, the template and a workflow for each (--power
	// ipmi: created at power-on, with --netboot).
	sum, err := fileSHA256(filepath.Join(www, "disk.img.gz"))
	if err != nil {
		return false, err
	}
	tplFile := filepath.Join(sb.dir, "template.yaml")
	if err := os.WriteFile(tplFile, []byte(template("http://"+bootsHTTP+"/osie/disk.img.gz", sum, tag, imageProgressEvery(o))), 0o644); err != nil {
		return false, err
	}
	sb.stage("pushing the template, %d hardware record(s) and their workflows with the herd CLI", len(ms))
	if _, err := herd("", "template", "create", "--file", tplFile); err != nil {
		return false, err
	}
	wfIDs := make([]string, len(ms))
	for i, m := range ms {
		sb.say("machine %d: %s MAC %s IP %s hostname %s (%s)", m.N, m.ID, m.MAC, m.IP, m.Hostname, m.firmware())
		hwFile := filepath.Join(sb.dir, fmt.Sprintf("hardware-%d.json", m.N))
		// Netboot off, as a machine that last booted its disk: the
		// workflow's creation switches it on (herd-server's toggle).
		if err := os.WriteFile(hwFile, []byte(hardwareJSON(m, false)), 0o644); err != nil {
			return false, err
		}
		if _, err := herd("", "hardware", "push", "--file", hwFile); err != nil {
			return false, err
		}
		if o.power == powerIPMI {
			continue
		}
		out, err := herd("", "workflow", "create", "-t", "sandbox-install", "-r", fmt.Sprintf(`{"device_1":%q}`, m.MAC))
		if err != nil {
			return false, err
		}
		wfIDs[i] = createdWorkflowID(out)
	}
	sb.say("files in %s", sb.dir)

	// 5. The VMs.
	ok, err := sb.runVMs(ctx, ms, wfIDs, clientEnv)
	if o.stack == stackCompose && o.downAfter {
		// Part of the verdict: down must leave nothing of the stack.
		if derr := sb.composeDown(ctx, sb.composeEnv(sb.dockerHost())); derr != nil {
			return false, errors.Join(err, derr)
		}
	}
	return ok, err
}

// startProcesses starts PostgreSQL, herd-server, the registry (with the
// action images pushed), herd-metadata and herd-boots (serving www as
// /osie/), each a process of its own in the namespace, and returns the
// herd CLI's environment.
func (sb *sandbox) startProcesses(ctx context.Context, www string) ([]string, error) {
	o := sb.opts
	bin := func(name string) string { return filepath.Join(o.repo, "bin", name) }
	// PostgreSQL.
	sb.stage("PostgreSQL on 127.0.0.1:%s inside %s (data: %s/pg)", pgPort, nsName, sb.dir)
	if err := sb.startPostgres(ctx); err != nil {
		return nil, err
	}

	// herd-server.
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(sb.dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	// herd-boots and herd-metadata get the scoped service token: read and
	// watch hardware, record boot events, nothing else.
	serviceToken, err := randomToken()
	if err != nil {
		return nil, err
	}
	// herd-bmc's token: take BMC jobs and report them, nothing else.
	bmcToken, err := randomToken()
	if err != nil {
		return nil, err
	}
	sb.addSecret("the admin token", token)
	sb.addSecret("the service token", serviceToken)
	sb.addSecret("the BMC agent's token", bmcToken)
	serviceTokenFile := filepath.Join(sb.dir, "service-token")
	if err := os.WriteFile(serviceTokenFile, []byte(serviceToken+"\n"), 0o600); err != nil {
		return nil, err
	}
	bmcTokenFile := filepath.Join(sb.dir, "bmc-token")
	if err := os.WriteFile(bmcTokenFile, []byte(bmcToken+"\n"), 0o600); err != nil {
		return nil, err
	}
	reps := serverReplicas(o.serverReplicas)
	if len(reps) == 1 {
		sb.stage("herd-server: gRPC %s, HTTP %s", reps[0].grpc, reps[0].http)
	} else {
		sb.stage("%d herd-server replicas on one database and state directory, started together: gRPC %s", len(reps), authority(reps))
	}
	sb.servers = nil
	for i, r := range reps {
		srv, err := sb.startProc(spec{name: r.name, netns: nsName, order: 20 + i, args: []string{bin("herd-server"),
			"--db-url", "postgres://postgres@127.0.0.1:" + pgPort + "/postgres?sslmode=disable",
			"--state-dir", filepath.Join(sb.dir, "server"), "--grpc-addr", r.grpc, "--http-addr", r.http,
			"--auth-token-file", tokenFile, "--service-token-file", serviceTokenFile, "--bmc-token-file", bmcTokenFile,
			"--tls-hosts", hostIP, "--log-format", "text"}})
		if err != nil {
			return nil, err
		}
		sb.servers = append(sb.servers, srv)
	}
	for i, r := range reps {
		if err := waitHTTP(ctx, "http://"+r.http+"/healthz", sb.servers[i], 60*time.Second); err != nil {
			return nil, sb.withLog(err, r.name)
		}
		if len(reps) > 1 {
			sb.say("replica %d (%s): gRPC %s, HTTP %s healthy", i+1, r.name, r.grpc, r.http)
		}
	}
	srvConn := sb.serverConn(reps)
	conn := srvConn.flags()
	clientEnv := srvConn.env(token)
	if len(reps) > 1 {
		sb.say("every client (herd-boots, herd-metadata, herd-bmc, the herd CLI, the OSIE's worker) gets --server %s and trusts %s", srvConn.authority, srvConn.caFile)
	}
	svcEnv := []string{"HERD_TOKEN=" + serviceToken}

	// Registry and action images.
	sb.stage("registry %s (Debian's docker-registry, TLS and htpasswd, storage %s/registry)", registry, sb.dir)
	reg, err := sb.startRegistry(ctx)
	if err != nil {
		return nil, err
	}
	sb.say("an anonymous request is refused (401); the OSIE pulls as %q", reg.user)
	sb.addSecret("the registry password", reg.password)
	// Always: the registry is new with each run (make and the Go build
	// cache make this quick when nothing changed).
	sb.stage("action images: private dockerd in %s, make action-images, push to %s", nsName, registry)
	if err := sb.buildActions(ctx, reg); err != nil {
		return nil, err
	}

	// herd-metadata.
	sb.stage("herd-metadata on %s", metaAddr)
	md, err := sb.startProc(spec{name: "herd-metadata", netns: nsName, order: 40, env: svcEnv, args: append(append([]string{bin("herd-metadata")}, conn...),
		"--metadata-addr", metaAddr, "--log-format", "json")})
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+metaAddr+"/healthz", md, 60*time.Second); err != nil {
		return nil, sb.withLog(err, "herd-metadata")
	}

	// herd-boots, serving the OSIE and the OS image.
	for src, dst := range map[string]string{bin("osie/vmlinuz"): "vmlinuz-x86_64", bin("osie/initramfs.img"): "initramfs-x86_64",
		bin("osimage/disk.img.gz"): "disk.img.gz"} {
		if err := linkOrCopy(src, filepath.Join(www, dst)); err != nil {
			return nil, err
		}
	}
	sb.stage("herd-boots: DHCP (reservation) on %s, TFTP, HTTP %s (OSIE and disk image from %s), syslog", bridge, bootsHTTP, www)
	// The registry's credentials go to the OSIE on its kernel line.
	bootsEnv := append([]string{"HERD_REGISTRY_USER=" + reg.user, "HERD_REGISTRY_PASSWORD=" + reg.password}, svcEnv...)
	bootsArgs := append(append([]string{bin("herd-boots")}, conn...), "--public-ip", hostIP,
		"--http-addr", bootsHTTP, "--dhcp-mode", "reservation", "--dhcp-interface", bridge,
		"--ipxe-dir", "/usr/lib/ipxe", "--osie-dir", www, "--registry", registry,
		// debug: the per-packet DHCP lines the live view shows.
		"--metadata-url", "http://"+metaAddr, "--log-format", "json", "--log-level", "debug")
	if len(reps) > 1 {
		// The OSIE's worker gets the list on its kernel line (its
		// grpc_authority=, boots' --server), and its CA from boots,
		// pinned: no replica's /cert, which would die with it.
		if err := copyFile(sb.serverCA(), filepath.Join(www, workerCAName)); err != nil {
			return nil, err
		}
		bootsArgs = append(bootsArgs, "--worker-cert-url", workerCAURL(), "--worker-ca-cert", sb.serverCA())
	}
	boots, err := sb.startProc(spec{name: "herd-boots", netns: nsName, order: 50, env: bootsEnv, args: bootsArgs})
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+bootsHTTP+"/healthz", boots, 60*time.Second); err != nil {
		return nil, sb.withLog(err, "herd-boots")
	}
	if o.power != powerIPMI {
		return clientEnv, nil
	}

	// herd-bmc, where the BMC network is: the namespace.
	sb.stage("herd-bmc: BMC jobs from herd-server over gRPC, IPMI to the BMCs on %s (%s/24), HTTP %s", bmcLink, bmcNetIP, bmcHTTP)
	bmc, err := sb.startProc(spec{name: "herd-bmc", netns: nsName, order: 55, env: []string{"HERD_TOKEN=" + bmcToken}, args: append(append([]string{bin("herd-bmc")}, conn...),
		"--bmc-http-addr", bmcHTTP, "--agent", "sandbox", "--log-format", "json")})
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+bmcHTTP+"/healthz", bmc, 60*time.Second); err != nil {
		return nil, sb.withLog(err, "herd-bmc")
	}
	return clientEnv, nil
}

func (sb *sandbox) withLog(err error, name string) error {
	b, _ := os.ReadFile(sb.logPath(name))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Errorf("%w\n--- end of %s ---\n%s", err, sb.logPath(name), b)
}

// runLogged runs a command to completion with its output in logs/NAME.log.
func (sb *sandbox) runLogged(ctx context.Context, name string, env []string, args ...string) error {
	f, err := os.OpenFile(sb.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "$ %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	t := time.Now()
	if err := cmd.Run(); err != nil {
		return sb.withLog(fmt.Errorf("%s: %w", strings.Join(args, " "), err), name)
	}
	sb.say("%s: done in %s", strings.Join(args, " "), fmtDur(time.Since(t)))
	return nil
}

// herd runs the herd CLI inside the namespace and prints the command
// and its (short) output.
func (sb *sandbox) herd(ctx context.Context, env []string, stdin string, args ...string) (string, error) {
	out, err := sb.herdRun(ctx, env, stdin, args...)
	sb.say("$ herd %s", strings.Join(args, " "))
	if s := strings.TrimSpace(out); s != "" && len(s) < 400 {
		sb.say("  %s", strings.ReplaceAll(s, "\n", "\n              "))
	}
	return out, err
}

// herdRun runs the herd CLI inside the namespace, quietly.
func (sb *sandbox) herdRun(ctx context.Context, env []string, stdin string, args ...string) (string, error) {
	full := append([]string{"nsenter", "--net=" + nsPath(), "--", filepath.Join(sb.opts.repo, "bin", "herd")}, args...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("herd %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (sb *sandbox) startPostgres(ctx context.Context) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("no postgres user: apt-get install postgresql (make deps): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(bins)
	if len(bins) == 0 {
		return errors.New("PostgreSQL is not installed: apt-get install postgresql (make deps)")
	}
	pgbin := bins[len(bins)-1]
	dir := filepath.Join(sb.dir, "pg")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	// The state directory must be traversable by postgres.
	_ = os.Chmod(sb.dir, 0o755)
	initdb := exec.CommandContext(ctx, filepath.Join(pgbin, "initdb"), "--pgdata", filepath.Join(dir, "data"),
		"--username", "postgres", "--auth", "trust", "--encoding", "UTF8", "--locale", "C")
	initdb.Dir = dir
	initdb.SysProcAttr = credential(uid, gid)
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	_ = os.WriteFile(sb.logPath("postgres"), nil, 0o644)
	_ = os.Chown(sb.logPath("postgres"), uid, gid)
	p, err := sb.startProc(spec{name: "postgres", netns: nsName, uid: uid, gid: gid, order: 10, dir: dir,
		args: []string{filepath.Join(pgbin, "postgres"), "-D", filepath.Join(dir, "data"), "-k", dir,
			"-h", "127.0.0.1", "-p", pgPort, "-c", "max_connections=100", "-c", "fsync=off"}})
	if err != nil {
		return err
	}
	return sb.waitLog(ctx, "postgres", "database system is ready to accept connections", p, 60*time.Second)
}

// waitLog waits for text in logs/NAME.log.
func (sb *sandbox) waitLog(ctx context.Context, name, text string, p *proc, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(sb.logPath(name))
		if strings.Contains(string(b), text) {
			return nil
		}
		if p != nil && p.exited() {
			return sb.withLog(fmt.Errorf("%s exited: %v", name, p.err), name)
		}
		if time.Now().After(deadline) {
			return sb.withLog(fmt.Errorf("%s did not log %q within %s", name, text, within), name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// buildActions runs a private dockerd, builds and pushes the action
// images with it, and stops it.
func (sb *sandbox) buildActions(ctx context.Context, reg registryAuth) error {
	host, stop, err := sb.startDockerd(ctx, 35)
	if err != nil {
		return err
	}
	defer stop()
	env := []string{"DOCKER_HOST=" + host, "DOCKER_BUILDKIT=0", "DOCKER_CONFIG=" + filepath.Join(sb.dir, "docker-config")}
	login := exec.CommandContext(ctx, "docker", "login", "--username", reg.user, "--password-stdin", registry)
	login.Env, login.Stdin = append(os.Environ(), env...), strings.NewReader(reg.password)
	if out, err := login.CombinedOutput(); err != nil {
		return fmt.Errorf("docker login %s: %w: %s", registry, err, out)
	}
	return sb.runLogged(ctx, "actions", env, "make", "-C", sb.opts.repo, "action-images",
		"ACTION_REGISTRY="+registry, "ACTION_TAG="+actionsTag)
}

// startDockerd runs a private dockerd in the namespace (its own data
// root, exec root and socket under the state directory; no iptables, no
// bridge; its own mount namespace) that trusts the registry by
// --insecure-registry, and waits until it answers. It returns the engine's
// DOCKER_HOST and a stop that ends it and removes its files; down stops it
// by its pid file otherwise.
func (sb *sandbox) startDockerd(ctx context.Context, order int) (string, func(), error) {
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		return "", nil, fmt.Errorf("dockerd (Debian package docker.io; make deps): %w", err)
	}
	ddir := filepath.Join(sb.dir, "docker")
	if err := os.MkdirAll(ddir, 0o711); err != nil {
		return "", nil, err
	}
	sock := filepath.Join(ddir, "docker.sock")
	host := "unix://" + sock
	// unshare: its own mount namespace, so its mounts go with it.
	p, err := sb.startProc(spec{name: "dockerd", netns: nsName, order: order, exe: dockerd, args: []string{"unshare", "--mount", "--propagation", "private", "--",
		dockerd, "--iptables=false", "--bridge=none", "--storage-driver=overlay2", "--insecure-registry", registry,
		"--data-root", filepath.Join(ddir, "data"), "--exec-root", filepath.Join(ddir, "exec"),
		"-H", host, "--pidfile", filepath.Join(ddir, "docker.pid")}})
	if err != nil {
		return "", nil, err
	}
	stop := func() {
		// Our own child: signal it directly, whatever its pid file says.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		pfs, _ := readPidFiles(sb.dir)
		for _, pf := range pfs {
			if strings.HasSuffix(pf.path, "-dockerd.pid") {
				_ = os.Remove(pf.path)
			}
		}
		unmountUnder(ddir)
		_ = os.RemoveAll(ddir)
	}
	deadline := time.Now().Add(60 * time.Second)
	for exec.CommandContext(ctx, "docker", "-H", host, "version").Run() != nil {
		if p.exited() || time.Now().After(deadline) {
			stop()
			return "", nil, sb.withLog(errors.New("the private dockerd did not answer"), "dockerd")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return host, stop, nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// linkOrCopy hard-links src to dst, or copies it where a link is refused
// (another file system).
func linkOrCopy(src, dst string) error {
	_ = os.Remove(dst)
	if os.Link(src, dst) == nil {
		return nil
	}
	return copyFile(src, dst)
}

// copyFile writes a copy of src at dst: a file of its own, for what the
// VM writes to (OVMF's variables), never a link to the system's.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReader(f)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
