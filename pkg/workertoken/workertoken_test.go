package workertoken

import (
	"bytes"
	"testing"
)

func TestSignVerify(t *testing.T) {
	key, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	const id = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"
	tok := Sign(key, id)
	tests := []struct {
		name  string
		key   []byte
		token string
		id    string
		ok    bool
	}{
		{"own token", key, tok, id, true},
		{"other key", other, tok, "", false},
		{"id swapped", key, "5f2c6a3e-1111-4c4c-9a9a-222233334444" + tok[len(id):], "", false},
		{"no signature", key, id, "", false},
		{"empty id", key, "." + tok[len(id)+1:], "", false},
		{"truncated signature", key, tok[:len(tok)-1], "", false},
		{"empty", key, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Verify(tt.key, tt.token)
			if got != tt.id || ok != tt.ok {
				t.Fatalf("Verify = %q, %v; want %q, %v", got, ok, tt.id, tt.ok)
			}
		})
	}
}
