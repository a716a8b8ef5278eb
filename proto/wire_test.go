package proto_test

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/herd-metal/herd/proto/hardware"
	_ "github.com/herd-metal/herd/proto/template"
	_ "github.com/herd-metal/herd/proto/workflow"
)

// TestTinkV06Wire holds the generated descriptors to every Tinkerbell v0.6.0
// wire fact: a renamed method, a renumbered field or enum value breaks
// existing clients silently, so each fact is checked here.
func TestTinkV06Wire(t *testing.T) {
	f, err := os.Open("testdata/tink-v0.6-wire.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checked := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		checked++
		if svc, method, ok := strings.Cut(line, "/"); ok {
			checkMethod(t, svc, method)
			continue
		}
		name, num, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("unreadable fact %q", line)
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil {
			t.Errorf("fact %q: %v", line, err)
			continue
		}
		checkNumber(t, name, n)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("only %d facts read; the reference file looks truncated", checked)
	}
}

func checkMethod(t *testing.T, svc, method string) {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		t.Errorf("service %s: %v", svc, err)
		return
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Errorf("%s is not a service", svc)
		return
	}
	if sd.Methods().ByName(protoreflect.Name(method)) == nil {
		t.Errorf("service %s has no method %s", svc, method)
	}
}

// checkNumber resolves pkg.Message[.Nested].field or pkg.Enum.VALUE.
func checkNumber(t *testing.T, name string, want int) {
	t.Helper()
	i := strings.LastIndex(name, ".")
	parent, leaf := name[:i], name[i+1:]
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(parent))
	if err != nil {
		t.Errorf("%s: parent %s not found: %v", name, parent, err)
		return
	}
	switch pd := d.(type) {
	case protoreflect.MessageDescriptor:
		fd := pd.Fields().ByName(protoreflect.Name(leaf))
		if fd == nil {
			t.Errorf("%s: message %s has no field %s", name, parent, leaf)
			return
		}
		if int(fd.Number()) != want {
			t.Errorf("%s: field number %d, v0.6 has %d", name, fd.Number(), want)
		}
	case protoreflect.EnumDescriptor:
		vd := pd.Values().ByName(protoreflect.Name(leaf))
		if vd == nil {
			t.Errorf("%s: enum %s has no value %s", name, parent, leaf)
			return
		}
		if int(vd.Number()) != want {
			t.Errorf("%s: enum number %d, v0.6 has %d", name, vd.Number(), want)
		}
	default:
		t.Errorf("%s: %s is neither a message nor an enum", name, parent)
	}
}
