package workertoken

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	key, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	const id = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"
	now := time.Unix(1_700_000_000, 0)
	claims := Claims{HardwareID: id, Generation: 7, Expires: now.Add(time.Hour)}
	tok := Sign(key, claims)
	sig := tok[strings.LastIndexByte(tok, '.'):]
	tests := []struct {
		name  string
		key   []byte
		token string
		now   time.Time
		want  Claims
		err   error
	}{
		{"own token", key, tok, now, claims, nil},
		{"just before expiry", key, tok, now.Add(time.Hour - time.Second), claims, nil},
		{"at expiry", key, tok, now.Add(time.Hour), claims, ErrExpired},
		{"other key", other, tok, now, Claims{}, ErrInvalid},
		{"id swapped", key, "5f2c6a3e-1111-4c4c-9a9a-222233334444" + tok[len(id):], now, Claims{}, ErrInvalid},
		{"generation changed", key, id + ".8." + tok[len(id)+3:], now, Claims{}, ErrInvalid},
		{"expiry pushed", key, Sign(key, claims)[:len(id)+3] + "9999999999" + sig, now, Claims{}, ErrInvalid},
		{"v1 format (id.mac)", key, id + sig, now, Claims{}, ErrInvalid},
		{"no signature", key, id, now, Claims{}, ErrInvalid},
		{"empty id", key, Sign(key, Claims{Generation: 1, Expires: now.Add(time.Hour)}), now, Claims{}, ErrInvalid},
		{"truncated signature", key, tok[:len(tok)-1], now, Claims{}, ErrInvalid},
		{"empty", key, "", now, Claims{}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Verify(tt.key, tt.token, tt.now)
			if !errors.Is(err, tt.err) || err == nil && tt.err != nil {
				t.Fatalf("Verify err = %v, want %v", err, tt.err)
			}
			if !got.Expires.Equal(tt.want.Expires) || got.HardwareID != tt.want.HardwareID || got.Generation != tt.want.Generation {
				t.Fatalf("Verify = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	const life = 24 * time.Hour
	base := time.Unix(1_700_000_000, 0).Truncate(6 * time.Hour)
	for _, off := range []time.Duration{0, time.Second, 3 * time.Hour, 6*time.Hour - time.Second} {
		exp, renew := Expiry(base.Add(off), life)
		if !exp.Equal(base.Add(life)) || !renew.Equal(base.Add(6*time.Hour)) {
			t.Errorf("issued at +%v: expires %v renew %v, want %v %v", off, exp, renew, base.Add(life), base.Add(6*time.Hour))
		}
		if left := exp.Sub(base.Add(off)); left <= 18*time.Hour || left > life {
			t.Errorf("issued at +%v: %v left", off, left)
		}
	}
	// Two issues in the same step are the same credential.
	key := bytes.Repeat([]byte{1}, 32)
	e1, _ := Expiry(base.Add(time.Minute), life)
	e2, _ := Expiry(base.Add(time.Hour), life)
	if Sign(key, Claims{"x", 1, e1}) != Sign(key, Claims{"x", 1, e2}) {
		t.Error("credentials of one step differ")
	}
	// Short lifetimes are clamped to whole-second steps.
	if exp, renew := Expiry(base, time.Second); exp.Sub(base) != MinLifetime || renew.Sub(base) != time.Second {
		t.Errorf("lifetime 1s: expires +%v renew +%v", exp.Sub(base), renew.Sub(base))
	}
}
