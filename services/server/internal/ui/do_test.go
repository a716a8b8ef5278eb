package ui

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/proto/hardware"
)

func TestWithAllowPXE(t *testing.T) {
	in := &hardware.Hardware{Id: "a", Version: 3, Metadata: `{"x":1}`, Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{
		{Dhcp: &hardware.Hardware_DHCP{Mac: "02:00:00:00:00:01"}, Netboot: &hardware.Hardware_Netboot{AllowPxe: false, AllowWorkflow: true}},
		{Dhcp: &hardware.Hardware_DHCP{Mac: "02:00:00:00:00:02"}},
	}}}
	orig := proto.Clone(in)
	out := withAllowPXE(in, true)
	if !proto.Equal(in, orig) {
		t.Fatal("the record read was changed")
	}
	for _, i := range out.GetNetwork().GetInterfaces() {
		if !i.GetNetboot().GetAllowPxe() {
			t.Fatalf("interface %s: allow_pxe still off", i.GetDhcp().GetMac())
		}
	}
	back := withAllowPXE(out, false)
	back.Network.Interfaces[1].Netboot = nil // the one that had none
	if !proto.Equal(back, orig) {
		t.Fatalf("switching on and off changed more than allow_pxe:\n%v\n%v", back, orig)
	}
}

func TestOnOff(t *testing.T) {
	for in, want := range map[string]bool{"on": true, "off": false} {
		if got, err := onOff(in); err != nil || got != want {
			t.Errorf("onOff(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "ON", "true", "1"} {
		if _, err := onOff(in); err == nil {
			t.Errorf("onOff(%q) accepted", in)
		}
	}
}
