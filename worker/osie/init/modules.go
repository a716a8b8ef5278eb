package main

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// ModuleDeps is a parsed modules.dep: for each module name (dashes read as
// underscores, as the kernel does), its file relative to the modules
// directory and the modules it needs.
type ModuleDeps map[string]moduleEntry

type moduleEntry struct {
	file string
	deps []string
}

// ParseModulesDep reads depmod's modules.dep ("kernel/a.ko: kernel/b.ko kernel/c.ko").
func ParseModulesDep(r io.Reader) (ModuleDeps, error) {
	deps := ModuleDeps{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: no colon in %q", n, line)
		}
		e := moduleEntry{file: strings.TrimSpace(file)}
		for _, d := range strings.Fields(rest) {
			e.deps = append(e.deps, ModuleName(d))
		}
		deps[ModuleName(e.file)] = e
	}
	return deps, sc.Err()
}

// ModuleName is the name the kernel knows a module file by:
// "kernel/drivers/net/virtio_net.ko.xz" -> "virtio_net", "nvme-core" -> "nvme_core".
func ModuleName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// LoadOrder returns the files to load, each after every module it needs,
// for the wanted modules; a module appears once. Names not in modules.dep
// are returned as missing (built into the kernel or not shipped).
func (d ModuleDeps) LoadOrder(wanted []string) (files, missing []string) {
	done := map[string]bool{}
	var visit func(name string, depth int)
	visit = func(name string, depth int) {
		if done[name] || depth > 64 { // depth guards a (broken) cyclic modules.dep
			return
		}
		done[name] = true
		e, ok := d[name]
		if !ok {
			missing = append(missing, name)
			return
		}
		// modules.dep lists the whole closure, nearest first; visiting
		// each dependency's own needs first makes the order right anyway.
		for i := len(e.deps) - 1; i >= 0; i-- {
			visit(e.deps[i], depth+1)
		}
		files = append(files, e.file)
	}
	for _, w := range wanted {
		visit(ModuleName(w), 0)
	}
	return files, missing
}

// ParseModuleList reads a list of module names, one a line; # starts a comment.
func ParseModuleList(r io.Reader) ([]string, error) {
	var names []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	return names, sc.Err()
}

// ModuleSpec is one line of /etc/herd/modules: "name" is a driver loaded
// when a device needs it (its modalias matches), "name always" is loaded
// at every boot first (overlay, loop), "name later" at every boot while
// the network and the engine come up (file systems only actions use).
type ModuleSpec struct {
	Name   string
	Always bool
	Later  bool
}

// ParseModuleSpecs reads /etc/herd/modules.
func ParseModuleSpecs(r io.Reader) ([]ModuleSpec, error) {
	lines, err := ParseModuleList(r)
	var specs []ModuleSpec
	for _, l := range lines {
		f := strings.Fields(l)
		specs = append(specs, ModuleSpec{Name: ModuleName(f[0]), Always: len(f) > 1 && f[1] == "always",
			Later: len(f) > 1 && f[1] == "later"})
	}
	return specs, err
}

// Alias is one line of modules.alias: a modalias glob and its module.
type Alias struct {
	Pattern string
	Module  string
}

// ParseModulesAlias reads depmod's modules.alias ("alias PATTERN MODULE").
func ParseModulesAlias(r io.Reader) ([]Alias, error) {
	var out []Alias
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "alias" {
			out = append(out, Alias{Pattern: f[1], Module: ModuleName(f[2])})
		}
	}
	return out, sc.Err()
}

// DriversFor returns the modules, among allowed, whose aliases match one
// of the devices' modaliases, each once, in the order first matched; this
// is what udev does with modprobe, without either.
func DriversFor(aliases []Alias, modaliases []string, allowed map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	for _, ma := range modaliases {
		for _, a := range aliases {
			if seen[a.Module] || !allowed[a.Module] {
				continue
			}
			if ok, err := path.Match(a.Pattern, ma); err == nil && ok {
				seen[a.Module] = true
				out = append(out, a.Module)
			}
		}
	}
	return out
}
