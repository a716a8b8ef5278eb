package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParse(t *testing.T) {
	const pin = "5527e537a2771ec638e8b104b099c791c500685201411fdb09afb23de25c640c"
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(settings) bool
		wantErr string
	}{
		{"flags", []string{"--server", "10.1.0.1:42113", "--id", "hw1", "--registry", "10.1.0.1:5000"}, nil,
			func(s settings) bool {
				return s.server == "10.1.0.1:42113" && s.id == "hw1" && s.registry == "10.1.0.1:5000" && s.privileged
			}, ""},
		{"HERD_ environment", nil, map[string]string{"HERD_SERVER": "a:1", "HERD_ID": "hw2", "HERD_TOKEN": "hw2.sig", "HERD_PRIVILEGED": "false"},
			func(s settings) bool {
				return s.server == "a:1" && s.id == "hw2" && s.token == "hw2.sig" && !s.privileged
			}, ""},
		{"Tinkerbell environment", nil, map[string]string{"TINKERBELL_GRPC_AUTHORITY": "b:2", "WORKER_ID": "hw3",
			"TINKERBELL_CERT_URL": "http://b:42114/cert", "DOCKER_REGISTRY": "r:5000", "REGISTRY_USERNAME": "u", "REGISTRY_PASSWORD": "p"},
			func(s settings) bool {
				return s.server == "b:2" && s.id == "hw3" && s.certURL == "http://b:42114/cert" && s.registry == "r:5000" && s.regUser == "u" && s.regPassword == "p"
			}, ""},
		{"registry CA", nil, map[string]string{"HERD_SERVER": "a:1", "HERD_ID": "x", "HERD_REGISTRY": "r:5000", "HERD_REGISTRY_CA_FILE": "/run/ca.pem"},
			func(s settings) bool { return s.registryCA == "/run/ca.pem" && s.certsDir == "/etc/docker/certs.d" }, ""},
		{"HERD_ wins over Tinkerbell", nil, map[string]string{"HERD_SERVER": "a:1", "TINKERBELL_GRPC_AUTHORITY": "b:2", "HERD_ID": "x"},
			func(s settings) bool { return s.server == "a:1" }, ""},
		{"flag wins over environment", []string{"--id", "flag"}, map[string]string{"HERD_SERVER": "a:1", "HERD_ID": "env"},
			func(s settings) bool { return s.id == "flag" }, ""},
		{"CA pin", []string{"--server", "a:1", "--id", "x"}, map[string]string{"HERD_CA_SHA256": strings.ToUpper(pin)},
			func(s settings) bool { return s.caSHA256 == pin }, ""},
		{"bad CA pin", []string{"--server", "a:1", "--id", "x", "--ca-sha256", "abc"}, nil, nil, "--ca-sha256 (HERD_CA_SHA256): CA pin \"abc\": want the 64 hex digits"},
		{"default call and keepalive times", []string{"--server", "a:1", "--id", "x"}, nil,
			func(s settings) bool {
				return s.callTimeout == 15*time.Second && s.keepaliveTime == 30*time.Second && s.keepaliveWait == 5*time.Second
			}, ""},
		{"call and keepalive times", nil, map[string]string{"HERD_SERVER": "a:1", "HERD_ID": "x", "HERD_CALL_TIMEOUT": "4s",
			"HERD_KEEPALIVE_TIME": "1m", "HERD_KEEPALIVE_TIMEOUT": "2s"},
			func(s settings) bool {
				return s.callTimeout == 4*time.Second && s.keepaliveTime == time.Minute && s.keepaliveWait == 2*time.Second
			}, ""},
		{"keepalive below gRPC's floor", []string{"--server", "a:1", "--id", "x", "--keepalive-time", "5s"}, nil, nil, "--keepalive-time (HERD_KEEPALIVE_TIME) 5s: want at least 10s"},
		{"no keepalive timeout", []string{"--server", "a:1", "--id", "x", "--keepalive-timeout", "0s"}, nil, nil, "--keepalive-timeout (HERD_KEEPALIVE_TIMEOUT) 0s: want a positive"},
		{"no call timeout", []string{"--server", "a:1", "--id", "x", "--call-timeout", "-1s"}, nil, nil, "--call-timeout (HERD_CALL_TIMEOUT) -1s: want a positive"},
		{"docker runtime by default", []string{"--server", "a:1", "--id", "x"}, nil,
			func(s settings) bool { return s.runtime == "docker" && !s.runcNoPivot && !s.registryInsecure }, ""},
		{"runc runtime from the environment", nil, map[string]string{"HERD_SERVER": "a:1", "HERD_ID": "x", "HERD_RUNTIME": "runc",
			"HERD_RUNC_NO_PIVOT": "true", "HERD_REGISTRY_INSECURE": "true", "HERD_RUNC_STATE_DIR": "/var/lib/r"},
			func(s settings) bool {
				return s.runtime == "runc" && s.runcNoPivot && s.registryInsecure && s.runcState == "/var/lib/r" && s.runcRoot == "/run/herd-worker/runc"
			}, ""},
		{"unknown runtime", []string{"--server", "a:1", "--id", "x", "--runtime", "podman"}, nil, nil, `--runtime (HERD_RUNTIME) "podman": want docker or runc`},
		{"runc off the host network", []string{"--server", "a:1", "--id", "x", "--runtime", "runc", "--network", "none"}, nil, nil, "host's network only"},
		{"no server", []string{"--id", "x"}, nil, nil, "no herd-server address"},
		{"no id", []string{"--server", "a:1"}, nil, nil, "no worker id"},
		{"stray argument", []string{"--server", "a:1", "--id", "x", "run"}, nil, nil, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parse(tc.args, env(tc.env), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(s) {
				t.Errorf("settings %+v", s)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := parse([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{"HERD_SERVER", "HERD_TOKEN", "HERD_METRICS_ADDR", "TINKERBELL_GRPC_AUTHORITY", "--registry-password", "HERD_RUNTIME", "--runc-no-pivot"} {
		if !strings.Contains(out.String(), strings.TrimPrefix(want, "--")) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}
