package ui

import (
	"strings"
	"testing"
)

func TestMaskSecrets(t *testing.T) {
	for _, tc := range []struct {
		name, doc     string
		shown, hidden []string
	}{
		{"empty", "", nil, nil},
		{"not JSON", `{"password": "hunter2"`, []string{"not shown"}, []string{"hunter2"}},
		{"top level", `{"root_password":"hunter2","hostname":"node-1"}`, []string{`"root_password": "` + masked, `"hostname": "node-1"`}, []string{"hunter2"}},
		{"nested and in lists", `{"instance":{"users":[{"name":"ops","ssh_authorized_keys":["ssh-ed25519 AAAA"],"API_TOKEN":"t0k"}]}}`,
			[]string{`"name": "ops"`, `"ssh_authorized_keys": "` + masked}, []string{"AAAA", "t0k"}},
		{"a secret-named object is masked whole", `{"tls_cert":{"pem":"-----BEGIN"}}`, []string{masked}, []string{"BEGIN"}},
		{"empty secret stays empty", `{"password":""}`, []string{`"password": ""`}, nil},
		{"markup is not escaped twice", `{"note":"<b>&</b>"}`, []string{`"note": "<b>&</b>"`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := maskSecrets(tc.doc)
			for _, s := range tc.shown {
				if !strings.Contains(got, s) {
					t.Errorf("%q missing from\n%s", s, got)
				}
			}
			for _, s := range tc.hidden {
				if strings.Contains(got, s) {
					t.Errorf("%q shown in\n%s", s, got)
				}
			}
		})
	}
}
