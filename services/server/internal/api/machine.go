package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// Limits on a BMC credential: generous for Redfish accounts, where IPMI
// itself allows 16-byte user names and 20-byte passwords.
const (
	maxBMCUsernameBytes = 256
	maxBMCPasswordBytes = 1024
)

// MachineStore is what the machine service needs from the store.
type MachineStore interface {
	PutBMCCredential(ctx context.Context, name, keyID string, sealed []byte) (time.Time, error)
	ListBMCCredentials(ctx context.Context) ([]store.SealedCredential, error)
	DeleteBMCCredential(ctx context.Context, name string) error
}

// Sealer encrypts a secret for one record (internal/keyring).
type Sealer interface {
	Seal(context string, plain []byte) (keyID string, sealed []byte, err error)
}

// Machine implements herd's MachineService.
type Machine struct {
	machine.UnimplementedMachineServiceServer
	store      MachineStore
	jobs       JobStore
	sealer     Sealer
	notify     Notifier
	jobTimeout time.Duration
	log        *slog.Logger
	now        func() time.Time
}

// NewMachine returns the machine service; a job not ended jobTimeout
// after it was asked ends TIMEOUT (DefaultJobTimeout when 0).
func NewMachine(s interface {
	MachineStore
	JobStore
}, sealer Sealer, n Notifier, jobTimeout time.Duration, log *slog.Logger) *Machine {
	if jobTimeout <= 0 {
		jobTimeout = DefaultJobTimeout
	}
	return &Machine{store: s, jobs: s, sealer: sealer, notify: n, jobTimeout: jobTimeout, log: log, now: time.Now}
}

// BMCSecret is what a sealed BMC credential holds.
type BMCSecret struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// BMCSealContext binds a sealed credential to its name, so a sealed value
// copied onto another row does not open.
func BMCSealContext(name string) string { return "bmc-credential/" + name }

// SetBMCCredential seals and stores a credential.
func (m *Machine) SetBMCCredential(ctx context.Context, req *machine.SetBMCCredentialRequest) (*machine.BMCCredential, error) {
	if msg := spec.CredentialNameProblem(req.GetName()); msg != "" {
		return nil, invalid("name", msg)
	}
	if err := checkBMCSecret("username", req.GetUsername(), maxBMCUsernameBytes, false); err != nil {
		return nil, err
	}
	if err := checkBMCSecret("password", req.GetPassword(), maxBMCPasswordBytes, true); err != nil {
		return nil, err
	}
	plain, err := json.Marshal(BMCSecret{Username: req.GetUsername(), Password: req.GetPassword()})
	if err != nil {
		return nil, err
	}
	keyID, sealed, err := m.sealer.Seal(BMCSealContext(req.GetName()), plain)
	if err != nil {
		return nil, err
	}
	at, err := m.store.PutBMCCredential(ctx, req.GetName(), keyID, sealed)
	if err != nil {
		return nil, err
	}
	return &machine.BMCCredential{Name: req.GetName(), UpdatedAt: timestamppb.New(at)}, nil
}

// checkBMCSecret validates a user name or password without ever putting
// its value in the error: it is a secret.
func checkBMCSecret(field, v string, max int, spaces bool) error {
	switch {
	case v == "":
		return invalid(field, "missing")
	case len(v) > max:
		return invalid(field, fmt.Sprintf("%d bytes, more than the %d allowed", len(v), max))
	case !utf8.ValidString(v):
		return invalid(field, "not valid UTF-8")
	}
	for i, r := range v {
		if unicode.IsControl(r) || (!spaces && unicode.IsSpace(r)) {
			return invalid(field, fmt.Sprintf("has a control or space character at byte %d", i))
		}
	}
	return nil
}

// ListBMCCredentials lists the credentials' names and users, no secrets.
func (m *Machine) ListBMCCredentials(ctx context.Context, _ *machine.ListBMCCredentialsRequest) (*machine.BMCCredentialList, error) {
	all, err := m.store.ListBMCCredentials(ctx)
	if err != nil {
		return nil, err
	}
	out := &machine.BMCCredentialList{}
	for _, c := range all {
		out.Credentials = append(out.Credentials, &machine.BMCCredential{
			Name: c.Name, UpdatedAt: timestamppb.New(c.UpdatedAt), UsedBy: c.UsedBy})
	}
	return out, nil
}

// DeleteBMCCredential removes a credential no record uses.
func (m *Machine) DeleteBMCCredential(ctx context.Context, req *machine.DeleteBMCCredentialRequest) (*machine.Empty, error) {
	if msg := spec.CredentialNameProblem(req.GetName()); msg != "" {
		return nil, invalid("name", msg)
	}
	return &machine.Empty{}, m.store.DeleteBMCCredential(ctx, req.GetName())
}
