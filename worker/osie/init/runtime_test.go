package main

import (
	"slices"
	"testing"
)

func TestRuntimeFor(t *testing.T) {
	if got := RuntimeFor(true); got != "docker" {
		t.Errorf("with dockerd: %s", got)
	}
	if got := RuntimeFor(false); got != "runc" {
		t.Errorf("without dockerd: %s", got)
	}
}

func TestRuncWorkerEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want []string
	}{
		{"a registry: plain HTTP to it, as dockerd's --insecure-registry", Config{Registry: "10.1.0.1:5000"},
			[]string{"HERD_RUNTIME=runc", "HERD_RUNC=/usr/sbin/runc", "HERD_RUNC_NO_PIVOT=true", "HERD_REGISTRY_INSECURE=true"}},
		{"no registry", Config{}, []string{"HERD_RUNTIME=runc", "HERD_RUNC=/usr/sbin/runc", "HERD_RUNC_NO_PIVOT=true"}},
	} {
		if got := RuncWorkerEnv(tc.c); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
