// Package ui is herd-server's web UI, served on the HTTP port under /ui/.
// It holds no privilege of its own: the operator logs in with the admin
// token, which the UI keeps server-side for the session and sends as the
// bearer of every call it makes to the gRPC API, in-process; the API's
// own authentication decides, as for the CLI.
package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/hardware"
	machinev1 "github.com/herd-metal/herd/proto/machine"
	templatev1 "github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

//go:embed static pages
var assets embed.FS

// Prefix is where the UI is mounted.
const Prefix = "/ui/"

const (
	cookieName = "herd_session"
	csrfField  = "csrf"
	csrfHeader = "X-CSRF-Token"
	// maxTokenBytes bounds the token a login form may carry.
	maxTokenBytes = 4096
	// maxSessions bounds the session table; idleTimeout and
	// sessionLifetime end a session left alone, and any session.
	maxSessions     = 1024
	idleTimeout     = 8 * time.Hour
	sessionLifetime = 24 * time.Hour
)

// apiClients are the API services the UI reads through.
type apiClients struct {
	hw  hardware.HardwareServiceClient
	wf  workflow.WorkflowServiceClient
	bmc machinev1.MachineServiceClient
	tpl templatev1.TemplateServiceClient
}

// Handler serves the UI.
type Handler struct {
	api      apiClients
	sessions *sessions
	logins   *loginLimiter
	pages    *template.Template
	log      *slog.Logger
	mux      *http.ServeMux
	// closing ends the live streams when the server shuts down.
	closing context.Context
	close   context.CancelFunc
}

// New returns the UI, which calls the API over conn (the server's
// in-process connection).
func New(conn grpc.ClientConnInterface, log *slog.Logger) *Handler {
	closing, closeFn := context.WithCancel(context.Background())
	h := &Handler{
		api: apiClients{hw: hardware.NewHardwareServiceClient(conn), wf: workflow.NewWorkflowServiceClient(conn),
			bmc: machinev1.NewMachineServiceClient(conn), tpl: templatev1.NewTemplateServiceClient(conn)},
		sessions: newSessions(maxSessions, idleTimeout, sessionLifetime, time.Now),
		logins:   newLoginLimiter(loginBurst, loginEvery, maxLoginSources, time.Now),
		pages:    template.Must(template.ParseFS(assets, "pages/*.html")),
		log:      log, mux: http.NewServeMux(), closing: closing, close: closeFn,
	}
	static, _ := fs.Sub(assets, "static")
	h.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET "+Prefix+"login", h.loginPage)
	h.mux.HandleFunc("POST "+Prefix+"login", h.login)
	h.mux.HandleFunc("POST "+Prefix+"logout", h.change(h.logout))
	h.mux.HandleFunc("GET "+Prefix+"{$}", h.page(h.fleetPage))
	h.mux.HandleFunc("GET "+Prefix+"events", h.events)
	h.mux.HandleFunc("GET "+Prefix+"machine/{id}", h.page(h.machinePage))
	h.mux.HandleFunc("GET "+Prefix+"workflow/{id}/events", h.timeline)
	h.mux.HandleFunc("GET "+Prefix+"workflow/{id}/logs", h.read(h.workflowLogs))
	h.mux.HandleFunc("GET "+Prefix+"power", h.read(h.power))
	h.mux.HandleFunc("POST "+Prefix+"machine/{id}/bmc", h.change(h.bmcAction))
	h.mux.HandleFunc("GET "+Prefix+"job/{id}/events", h.jobEvents)
	h.mux.HandleFunc("POST "+Prefix+"machine/{id}/netboot", h.change(h.setNetboot))
	h.mux.HandleFunc("POST "+Prefix+"workflow/{id}/delete", h.change(h.deleteWorkflow))
	h.mux.HandleFunc("GET "+Prefix+"templates", h.page(h.templatesPage))
	h.mux.HandleFunc("GET "+Prefix+"template/{id}", h.page(h.templatePage))
	h.mux.HandleFunc("POST "+Prefix+"template/{id}/workflow", h.change(h.createWorkflow))
	h.mux.HandleFunc("GET "+Prefix+"templates/new", h.page(h.newTemplatePage))
	h.mux.HandleFunc("GET "+Prefix+"template/{id}/edit", h.page(h.editTemplatePage))
	h.mux.HandleFunc("POST "+Prefix+"templates", limitBody(maxTemplateForm, h.change(h.saveTemplate)))
	h.mux.HandleFunc("POST "+Prefix+"template/{id}", limitBody(maxTemplateForm, h.change(h.saveTemplate)))
	return h
}

// Close ends the live streams (server shutdown).
func (h *Handler) Close() { h.close() }

// ServeHTTP sets the headers every answer carries, refuses a change from
// another origin, and routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: with no-referrer the browser sends
	// "Origin: null" on its own form posts, which sameOrigin refuses.
	hd.Set("Referrer-Policy", "same-origin")
	if !isRead(r.Method) && !sameOrigin(r) {
		http.Error(w, "refused: the request comes from another site (Origin "+r.Header.Get("Origin")+")", http.StatusForbidden)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func isRead(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// sameOrigin reports whether r comes from a page of this server: a
// browser sends Origin with every POST; without one, it is not a
// browser's cross-site request.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// current is the session r's cookie names.
func (h *Handler) current(r *http.Request) (id string, s session, ok bool) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return "", session{}, false
	}
	s, ok = h.sessions.get(c.Value)
	return c.Value, s, ok
}

// page serves a page to a logged-in browser and sends any other to the
// login page.
func (h *Handler) page(fn func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, s, ok := h.current(r)
		if !ok {
			http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		fn(w, r, s)
	}
}

// read serves data to a logged-in browser's script; any other gets 401.
func (h *Handler) read(fn func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, s, ok := h.current(r)
		if !ok {
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		fn(w, r, s)
	}
}

// change serves a change to a logged-in browser whose request carries
// the session's CSRF token (form field or header).
func (h *Handler) change(fn func(http.ResponseWriter, *http.Request, string, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, s, ok := h.current(r)
		if !ok {
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		got := r.Header.Get(csrfHeader)
		if got == "" {
			got = r.PostFormValue(csrfField)
		}
		if !csrfValid(s, got) {
			http.Error(w, "refused: missing or wrong CSRF token; reload the page", http.StatusForbidden)
			return
		}
		fn(w, r, id, s)
	}
}

type loginView struct{ Error string }

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, http.StatusOK, "login.html", loginView{})
}

func (h *Handler) render(w http.ResponseWriter, code int, name string, v any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := h.pages.ExecuteTemplate(w, name, v); err != nil {
		h.log.Warn("ui: rendering a page failed", "page", name, "error", err)
	}
}

// validToken decides whether a login form's token can be a bearer token
// at all: present, bounded, printable ASCII (what an HTTP/2 header value
// may carry).
func validToken(t string) error {
	switch {
	case t == "":
		return errors.New("enter the admin token")
	case len(t) > maxTokenBytes:
		return errors.New("the token is longer than any herd token")
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x21 || t[i] > 0x7e {
			return errors.New("the token holds a character no bearer token has (space, control or non-ASCII)")
		}
	}
	return nil
}

// probeID is a workflow id no workflow has: asking for it tells whether
// a token opens the operators' calls, without reading anything.
const probeID = "00000000-0000-0000-0000-000000000000"

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	source := loginSource(r.RemoteAddr)
	if ok, wait := h.logins.admit(source); !ok {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		h.log.Warn("ui: login refused: too many wrong tokens", "peer", r.RemoteAddr, "retry_after_s", secs)
		h.render(w, http.StatusTooManyRequests, "login.html", loginView{Error: fmt.Sprintf("refused: too many wrong tokens from your address; try again in %d s", secs)})
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if err := validToken(token); err != nil {
		h.render(w, http.StatusBadRequest, "login.html", loginView{Error: err.Error()})
		return
	}
	// The API's own authentication decides: only a token that opens an
	// operator call (the admin token) logs in; a service or worker token
	// is refused as a wrong one is.
	_, err := h.api.wf.GetWorkflow(h.asOperator(r.Context(), token), &workflow.GetRequest{Id: probeID})
	switch status.Code(err) {
	case codes.OK, codes.NotFound:
	case codes.Unauthenticated, codes.PermissionDenied:
		// Only a token the API refused counts: a malformed one was never
		// checked, so it teaches nothing.
		h.logins.charge(source)
		h.log.Warn("ui: login refused", "peer", r.RemoteAddr, "reason", status.Convert(err).Message())
		h.render(w, http.StatusUnauthorized, "login.html", loginView{Error: "refused: that is not the admin token"})
		return
	default:
		h.log.Error("ui: checking a login failed", "peer", r.RemoteAddr, "error", err)
		h.render(w, http.StatusServiceUnavailable, "login.html", loginView{Error: "cannot check the token now: " + status.Convert(err).Message()})
		return
	}
	id, _ := h.sessions.create(token)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: Prefix, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: int(sessionLifetime / time.Second)})
	h.log.Info("ui: operator logged in", "peer", r.RemoteAddr)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, id string, _ session) {
	h.sessions.delete(id)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// asOperator is ctx for an API call with the session's token as bearer.
func (h *Handler) asOperator(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

type fleetView struct{ CSRF string }

func (h *Handler) fleetPage(w http.ResponseWriter, _ *http.Request, s session) {
	h.render(w, http.StatusOK, "fleet.html", fleetView{CSRF: s.csrf})
}

// streamContext is the context of a live stream's API calls: with the
// session's token, ended when the client goes or the server shuts down.
func (h *Handler) streamContext(r *http.Request, s session) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(h.asOperator(r.Context(), s.token))
	stop := context.AfterFunc(h.closing, cancel)
	return ctx, func() { stop(); cancel() }
}

// startSSE answers with an event stream and tells the browser how soon
// to reconnect one that breaks.
func startSSE(w http.ResponseWriter) sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := sse{w: w, rc: http.NewResponseController(w)}
	_, _ = fmt.Fprintf(w, "retry: %d\n\n", retryMillis)
	_ = out.flush()
	return out
}

// events is the fleet's live stream (server-sent events). Without a
// session it answers 401, which makes the browser's EventSource give up
// (the page then goes to the login page).
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	id, s, ok := h.current(r)
	if !ok {
		http.Error(w, "not logged in", http.StatusUnauthorized)
		return
	}
	ctx, cancel := h.streamContext(r, s)
	defer cancel()
	out := startSSE(w)
	err := newFeed(h.api).run(ctx, out)
	switch {
	case status.Code(err) == codes.Unauthenticated || status.Code(err) == codes.PermissionDenied:
		// The token no longer opens the API (the server's token changed):
		// the session ends, and the browser's reconnect gets 401.
		h.sessions.delete(id)
		h.log.Warn("ui: the API refused a session's token; session ended", "peer", r.RemoteAddr, "error", err)
	case err != nil && ctx.Err() == nil:
		h.log.Warn("ui: fleet stream ended", "peer", r.RemoteAddr, "error", err)
	}
}
