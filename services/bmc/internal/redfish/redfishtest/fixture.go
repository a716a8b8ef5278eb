// Package redfishtest is a small Redfish service for tests: one
// ComputerSystem whose PowerState and Boot override change when a client
// posts ComputerSystem.Reset or patches Boot, behind SessionService
// sessions (X-Auth-Token). The documents follow the shapes of DMTF's
// published mockups and schema (ServiceRoot, ComputerSystemCollection,
// ComputerSystem v1.x, Session, the error object with
// @Message.ExtendedInfo); they are written here, not copied.
//
// No Redfish emulator is packaged for Debian, so this fixture is the
// limit of herd's Redfish tests: it proves herd's requests and its
// handling of the answers, not a vendor's firmware.
package redfishtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

const (
	systemID   = "437XR1138R2"
	systemPath = "/redfish/v1/Systems/" + systemID
	resetPath  = systemPath + "/Actions/ComputerSystem.Reset"
	sessPath   = "/redfish/v1/SessionService/Sessions"
)

// ResetTypes the system announces (ResetType@Redfish.AllowableValues).
var ResetTypes = []string{"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn", "PushPowerButton", "PowerCycle"}

// Targets the system announces for BootSourceOverrideTarget.
var Targets = []string{"None", "Pxe", "Cd", "Usb", "Hdd", "BiosSetup", "Utilities", "Diags", "UefiShell", "UefiTarget"}

// Server is the fixture. Its fields are guarded by mu; read them with State.
type Server struct {
	*httptest.Server
	User, Password string

	mu       sync.Mutex
	power    string // "On" or "Off"
	target   string
	enabled  string
	mode     string
	sessions map[string]bool
	resets   []string // ResetTypes received, in order
	logins   int
}

// State is a snapshot of the system.
type State struct {
	PowerState                string
	BootSourceOverrideTarget  string
	BootSourceOverrideEnabled string
	BootSourceOverrideMode    string
	Resets                    []string
	OpenSessions              int
	Logins                    int
}

// New starts the fixture on 127.0.0.1 with the system powered off.
func New(user, password string) *Server {
	s := &Server{User: user, Password: password, power: "Off", target: "None", enabled: "Disabled", mode: "Legacy", sessions: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// State returns the system's state now.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return State{s.power, s.target, s.enabled, s.mode, append([]string(nil), s.resets...), len(s.sessions), s.logins}
}

// SetPower sets the power state directly (test setup).
func (s *Server) SetPower(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.power = map[bool]string{true: "On", false: "Off"}[on]
}

// SetPowerState sets PowerState to any string, also one Redfish does
// not define (a malformed reply).
func (s *Server) SetPowerState(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.power = v
}

// HostPort is the listener's address, split.
func (s *Server) HostPort() (string, int) {
	a := s.Listener.Addr().String()
	i := strings.LastIndexByte(a, ':')
	var p int
	fmt.Sscanf(a[i+1:], "%d", &p)
	return a[:i], p
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Error writes a Redfish error reply: the error object with a code, a
// message and @Message.ExtendedInfo entries from the Base registry.
func Error(w http.ResponseWriter, code int, messageID, message string, args ...string) {
	if args == nil {
		args = []string{}
	}
	writeJSON(w, code, map[string]any{"error": map[string]any{
		"code":    "Base.1.8.GeneralError",
		"message": "A general error has occurred. See ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []map[string]any{{
			"@odata.type": "#Message.v1_1_1.Message",
			"MessageId":   messageID,
			"Message":     message,
			"MessageArgs": args,
			"Severity":    "Critical",
			"Resolution":  "See the message.",
		}},
	}})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path == "" {
		path = "/"
	}
	// The service root and the session login are open; the rest needs a session.
	switch {
	case r.Method == http.MethodGet && (path == "/redfish/v1" || path == "/redfish"):
		writeJSON(w, 200, serviceRoot())
		return
	case r.Method == http.MethodPost && path == sessPath:
		s.login(w, r)
		return
	}
	s.mu.Lock()
	ok := s.sessions[r.Header.Get("X-Auth-Token")]
	s.mu.Unlock()
	if !ok {
		Error(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
		return
	}
	switch {
	case r.Method == http.MethodDelete && strings.HasPrefix(path, sessPath+"/"):
		s.mu.Lock()
		delete(s.sessions, strings.TrimPrefix(path, sessPath+"/"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && path == "/redfish/v1/Systems":
		writeJSON(w, 200, map[string]any{
			"@odata.id":           "/redfish/v1/Systems",
			"@odata.type":         "#ComputerSystemCollection.ComputerSystemCollection",
			"Name":                "Computer System Collection",
			"Members@odata.count": 1,
			"Members":             []map[string]string{{"@odata.id": systemPath}},
		})
	case r.Method == http.MethodGet && path == systemPath:
		writeJSON(w, 200, s.system())
	case r.Method == http.MethodPost && path == resetPath:
		s.reset(w, r)
	case r.Method == http.MethodPatch && path == systemPath:
		s.patch(w, r)
	default:
		Error(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", fmt.Sprintf("The resource at the URI %s was not found.", path), path)
	}
}

func serviceRoot() map[string]any {
	return map[string]any{
		"@odata.id":      "/redfish/v1",
		"@odata.type":    "#ServiceRoot.v1_11_0.ServiceRoot",
		"Id":             "RootService",
		"Name":           "Root Service",
		"RedfishVersion": "1.15.0",
		"UUID":           "92384634-2938-2342-8820-489239905423",
		"Systems":        map[string]string{"@odata.id": "/redfish/v1/Systems"},
		"SessionService": map[string]string{"@odata.id": "/redfish/v1/SessionService"},
		"Links":          map[string]any{"Sessions": map[string]string{"@odata.id": sessPath}},
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var in struct{ UserName, Password string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil {
		Error(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service.")
		return
	}
	if in.UserName != s.User || in.Password != s.Password {
		Error(w, http.StatusUnauthorized, "Base.1.8.ResourceAtUriUnauthorized", "While accessing the resource at /redfish/v1/SessionService/Sessions, the service received an authorization error.", sessPath)
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.mu.Lock()
	s.sessions[tok] = true
	s.logins++
	s.mu.Unlock()
	// The session id is the token here: DELETE of Location ends it.
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", sessPath+"/"+tok)
	writeJSON(w, http.StatusCreated, map[string]any{
		"@odata.id":   sessPath + "/" + tok,
		"@odata.type": "#Session.v1_3_0.Session",
		"Id":          tok,
		"Name":        "User Session",
		"UserName":    in.UserName,
	})
}

func (s *Server) system() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]any{
		"@odata.id":    systemPath,
		"@odata.type":  "#ComputerSystem.v1_13_0.ComputerSystem",
		"Id":           systemID,
		"Name":         "WebFrontEnd483",
		"SystemType":   "Physical",
		"Manufacturer": "Contoso",
		"Model":        "3500",
		"SerialNumber": systemID,
		"Status":       map[string]string{"State": "Enabled", "Health": "OK"},
		"PowerState":   s.power,
		"Boot": map[string]any{
			"BootSourceOverrideEnabled":                        s.enabled,
			"BootSourceOverrideTarget":                         s.target,
			"BootSourceOverrideTarget@Redfish.AllowableValues": Targets,
			"BootSourceOverrideMode":                           s.mode,
		},
		"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
			"target":                            resetPath,
			"ResetType@Redfish.AllowableValues": ResetTypes,
		}},
	}
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	var in struct{ ResetType string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil {
		Error(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch in.ResetType {
	case "On", "ForceOn":
		s.power = "On"
	case "ForceOff", "GracefulShutdown":
		s.power = "Off"
	case "PowerCycle", "ForceRestart", "GracefulRestart":
		s.power = "On"
	default:
		Error(w, http.StatusBadRequest, "Base.1.8.ActionParameterNotSupported",
			fmt.Sprintf("The parameter %s for the action ComputerSystem.Reset is not supported on the target resource.", in.ResetType), in.ResetType, "ComputerSystem.Reset")
		return
	}
	s.resets = append(s.resets, in.ResetType)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Boot *struct {
			BootSourceOverrideTarget  string
			BootSourceOverrideEnabled string
			BootSourceOverrideMode    string
		}
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8192)).Decode(&in); err != nil || in.Boot == nil {
		Error(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service.")
		return
	}
	b := in.Boot
	if b.BootSourceOverrideTarget != "" && !contains(Targets, b.BootSourceOverrideTarget) {
		Error(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
			fmt.Sprintf("The value %s for the property BootSourceOverrideTarget is not in the list of acceptable values.", b.BootSourceOverrideTarget), b.BootSourceOverrideTarget, "BootSourceOverrideTarget")
		return
	}
	if b.BootSourceOverrideEnabled != "" && !contains([]string{"Disabled", "Once", "Continuous"}, b.BootSourceOverrideEnabled) {
		Error(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
			fmt.Sprintf("The value %s for the property BootSourceOverrideEnabled is not in the list of acceptable values.", b.BootSourceOverrideEnabled), b.BootSourceOverrideEnabled, "BootSourceOverrideEnabled")
		return
	}
	if b.BootSourceOverrideMode != "" && !contains([]string{"Legacy", "UEFI"}, b.BootSourceOverrideMode) {
		Error(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
			fmt.Sprintf("The value %s for the property BootSourceOverrideMode is not in the list of acceptable values.", b.BootSourceOverrideMode), b.BootSourceOverrideMode, "BootSourceOverrideMode")
		return
	}
	s.mu.Lock()
	if b.BootSourceOverrideTarget != "" {
		s.target = b.BootSourceOverrideTarget
	}
	if b.BootSourceOverrideEnabled != "" {
		s.enabled = b.BootSourceOverrideEnabled
	}
	if b.BootSourceOverrideMode != "" {
		s.mode = b.BootSourceOverrideMode
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
