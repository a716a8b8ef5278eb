package e2e

import (
	"bytes"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/lib/pq"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/server/internal/api"
	"github.com/herd-metal/herd/services/server/internal/keyring"
)

// The secret every check below looks for where it must not be.
const bmcPassword = "s3cret-Pa55-do-not-leak"

func hardwareWithBMC(t *testing.T, credential string) string {
	hw := readFile(t, "hardware-1.json")
	return strings.Replace(hw, `"metadata":`,
		`"bmc": {"address": "10.9.0.11", "protocol": "ipmi", "credential": "`+credential+`"}, "metadata":`, 1)
}

// sealedRow is a bmc_credential row as the database holds it.
type sealedRow struct {
	key    string
	sealed []byte
}

func sealedRows(t *testing.T, s *servertest.Server) map[string]sealedRow {
	t.Helper()
	db, err := sql.Open("postgres", s.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT name, key_id, sealed FROM bmc_credential")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]sealedRow{}
	for rows.Next() {
		var name string
		var r sealedRow
		if err := rows.Scan(&name, &r.key, &r.sealed); err != nil {
			t.Fatal(err)
		}
		out[name] = r
	}
	return out
}

// TestBMCCredentials: a credential is stored sealed, named by hardware
// records, listed without its secret, guarded against deletion while
// used, open only to the admin, and resealed when the key rotates.
func TestBMCCredentials(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "bmc.key")
	first, err := keyring.NewLine()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, "--bmc-key-file", keyFile)

	// A record may not name a credential that is not stored.
	_, stderr, code := s.Herd(hardwareWithBMC(t, "rack1"), "hardware", "push")
	if code != 1 || !strings.Contains(stderr, `bmc.credential "rack1" is not a stored credential`) {
		t.Fatalf("push naming a missing credential: exit %d, %s", code, stderr)
	}

	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(bmcPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.MustHerd("", "bmc", "credential", "set", "rack1", "--username", "admin", "--password-file", pw)
	s.MustHerd(bmcPassword+"\n", "bmc", "credential", "set", "spare", "--username", "root", "--password-file", "-")
	s.MustHerd(hardwareWithBMC(t, "rack1"), "hardware", "push")

	list := s.MustHerd("", "bmc", "credential", "list")
	if !strings.Contains(list, "rack1") || !strings.Contains(list, hw1) || !strings.Contains(list, "spare") {
		t.Fatalf("list does not show the credentials and their user:\n%s", list)
	}
	for _, out := range []string{list, s.MustHerd("", "bmc", "credential", "list", "-o", "json"),
		s.MustHerd("", "hardware", "id", hw1), s.MustHerd("", "hardware", "id", hw1, "-o", "json")} {
		if strings.Contains(out, bmcPassword) || strings.Contains(out, "admin\"") {
			t.Fatalf("a read shows the secret:\n%s", out)
		}
	}
	code, body := s.Rest("GET", "/v1/bmc/credentials", "", adminToken)
	if code != 200 || !strings.Contains(body, `"rack1"`) || strings.Contains(body, bmcPassword) {
		t.Fatalf("REST list: %d %s", code, body)
	}

	// At rest: sealed under the file's key, no plaintext.
	rows := sealedRows(t, s)
	firstID := strings.Fields(first)[0]
	if len(rows) != 2 || rows["rack1"].key != firstID {
		t.Fatalf("stored rows %v, want two sealed under %s", rows, firstID)
	}
	for name, r := range rows {
		if bytes.Contains(r.sealed, []byte(bmcPassword)) || bytes.Contains(r.sealed, []byte("admin")) {
			t.Fatalf("credential %s is stored in the clear", name)
		}
	}

	// Only the admin: the service token and a worker credential are refused.
	for _, token := range []string{servertest.ServiceToken, s.WorkerToken(hw1), ""} {
		_, err := machine.NewMachineServiceClient(s.Dial(token)).ListBMCCredentials(ctx(t), &machine.ListBMCCredentialsRequest{})
		if c := status.Code(err); c != codes.PermissionDenied && c != codes.Unauthenticated {
			t.Fatalf("non-admin list: %v", err)
		}
	}

	// Bad requests name the field and never echo the secret.
	mc := machine.NewMachineServiceClient(s.Dial(adminToken))
	for _, c := range []struct {
		req  *machine.SetBMCCredentialRequest
		want string
	}{
		{&machine.SetBMCCredentialRequest{Name: "../x", Username: "u", Password: "p"}, "name"},
		{&machine.SetBMCCredentialRequest{Name: "a", Password: "p"}, "username: missing"},
		{&machine.SetBMCCredentialRequest{Name: "a", Username: "u"}, "password: missing"},
		{&machine.SetBMCCredentialRequest{Name: "a", Username: "u", Password: strings.Repeat("p", 1025)}, "more than the 1024"},
		{&machine.SetBMCCredentialRequest{Name: "a", Username: "u", Password: "x\x00" + bmcPassword}, "control"},
		{&machine.SetBMCCredentialRequest{Name: "a", Username: "a b", Password: "p"}, "username"},
	} {
		_, err := mc.SetBMCCredential(ctx(t), c.req)
		wantCode(t, err, codes.InvalidArgument, c.want)
		if strings.Contains(err.Error(), bmcPassword) {
			t.Fatalf("the error echoes the password: %v", err)
		}
	}

	// In use: not deleted; unused: deleted; unknown: NotFound.
	_, stderr, code = s.Herd("", "bmc", "credential", "delete", "rack1")
	if code != 1 || !strings.Contains(stderr, "used by hardware "+hw1) {
		t.Fatalf("delete of a used credential: exit %d, %s", code, stderr)
	}
	s.MustHerd("", "bmc", "credential", "delete", "spare")
	_, err = mc.DeleteBMCCredential(ctx(t), &machine.DeleteBMCCredentialRequest{Name: "spare"})
	wantCode(t, err, codes.NotFound, "spare")

	// Rotation: a new first line; the restart reseals under it and the
	// sealed value opens with the new key only as rack1's.
	second, _ := keyring.NewLine()
	if err := os.WriteFile(keyFile, []byte(second+"\n"+first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	rows = sealedRows(t, s)
	secondID := strings.Fields(second)[0]
	if rows["rack1"].key != secondID {
		t.Fatalf("after rotation rack1 is sealed under %q, want %q", rows["rack1"].key, secondID)
	}
	findLine(t, s, "bmc credentials resealed under the current key", map[string]string{"key_id": secondID, "count": "^1$"})
	only, err := keyring.Parse("new key", []byte(second))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := only.Open(secondID, api.BMCSealContext("rack1"), rows["rack1"].sealed)
	if err != nil || !strings.Contains(string(plain), bmcPassword) {
		t.Fatalf("resealed credential does not open with the new key: %v", err)
	}

	// A key file that lost the key: the server starts and says which.
	if err := os.WriteFile(keyFile, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	findLine(t, s, "bmc credentials that no key in the key file opens: restore the key that sealed them, or set them again", nil)

	if strings.Contains(s.Stderr.String(), bmcPassword) {
		t.Fatal("the server log holds the password")
	}
}
