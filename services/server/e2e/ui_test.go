package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/keyring"
	"github.com/herd-metal/herd/services/server/internal/ui/uitest"
)

const uiTemplate = `version: "0.1"
name: ui-two-steps
tasks:
  - name: "disk"
    worker: "{{.device_1}}"
    actions:
      - name: "wipe"
        image: busybox
        timeout: 60
      - name: "image"
        image: busybox
        timeout: 60
`

// TestUIInABrowser logs into the web UI in a real chromium, refuses a
// wrong token, and sees a pushed machine appear on the fleet page and its
// workflow advance live as a worker reports over gRPC.
func TestUIInABrowser(t *testing.T) {
	s := servertest.Start(t)
	b := uitest.Browser(t)

	// No cookie, no page.
	uitest.Step(t, b, "open the fleet without a session", chromedp.Navigate(s.HTTP+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	loc := uitest.Get(t, b, "read the location", chromedp.Location())
	if !strings.HasSuffix(loc, "/ui/login") {
		t.Fatalf("without a session /ui/ went to %s, want the login page", loc)
	}

	// A wrong token, and the service token, are refused at login.
	for _, token := range []string{"not-the-admin-token", servertest.ServiceToken} {
		uitest.Login(t, b, s.HTTP, token)
		uitest.Step(t, b, "see the refusal", chromedp.WaitVisible(chromedp.CSS("#login-error")))
		msg := uitest.Get(t, b, "read the refusal", chromedp.Text(chromedp.CSS("#login-error")))
		if !strings.Contains(msg, "refused") {
			t.Fatalf("login with %q said %q, want a refusal", token, msg)
		}
		if c := uitest.Cookies(t, b, s.HTTP); len(c) != 0 {
			t.Fatalf("a refused login set cookies: %+v", c[0])
		}
	}

	uitest.Login(t, b, s.HTTP, servertest.AdminToken)
	uitest.Step(t, b, "reach the live fleet page", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
	loc = uitest.Get(t, b, "read the location", chromedp.Location())
	if !strings.HasSuffix(loc, "/ui/") {
		t.Fatalf("after login at %s, want /ui/", loc)
	}
	jar := uitest.Cookies(t, b, s.HTTP)
	if len(jar) != 1 {
		t.Fatalf("%d cookies after login, want the one session cookie", len(jar))
	}
	c := jar[0]
	if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/ui/" || c.Secure ||
		strings.Contains(c.Value, servertest.AdminToken) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/, not Secure over plain HTTP, no token in it", c)
	}

	// A machine pushed now appears.
	row := `tr[data-id="` + hw1 + `"]`
	s.MustHerd(strings.Replace(readFile(t, "hardware-1.json"), `"state": ""`, `"state": "", "root_password": "hunter2-ui"`, 1), "hardware", "push")
	uitest.Step(t, b, "see the pushed machine", chromedp.WaitVisible(chromedp.CSS(row+`[data-state="NONE"]`)))
	host := uitest.Get(t, b, "read the hostname", chromedp.Text(chromedp.CSS(row+" td.hostname")))
	mac := uitest.Get(t, b, "read the MAC", chromedp.Text(chromedp.CSS(row+" td.mac")))
	if host != "node-1" || mac != mac1 {
		t.Fatalf("row shows %q %q, want node-1 %s", host, mac, mac1)
	}

	// Its workflow advances live.
	s.MustHerd(uiTemplate, "template", "create")
	id := s.CreateWorkflow("ui-two-steps", `{"device_1":"`+mac1+`"}`)
	uitest.Step(t, b, "see the workflow pending", chromedp.WaitVisible(chromedp.CSS(row+`[data-state="PENDING"][data-progress="0/2"]`)))
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	for _, tc := range []struct {
		action   string
		state    workflow.State
		progress string
	}{
		{"wipe", workflow.State_STATE_RUNNING, "0/2"},
		{"wipe", workflow.State_STATE_SUCCESS, "1/2"},
	} {
		report(t, w, id, "disk", tc.action, tc.state)
		uitest.Step(t, b, "see "+tc.action+" "+tc.state.String(),
			chromedp.WaitVisible(chromedp.CSS(row+`[data-state="RUNNING"][data-progress="`+tc.progress+`"]`)))
	}

	// Its machine page (the fleet links it) follows the timeline live to
	// the end.
	uitest.Step(t, b, "open the machine page", chromedp.Click(chromedp.CSS(row+" td.hostname a")),
		chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
	timelineRow := func(action, state string) chromedp.Action[chromedp.Void] {
		return chromedp.WaitVisible(chromedp.CSS(`#timeline tbody tr[data-action="` + action + `"][data-state="` + state + `"]`))
	}
	uitest.Step(t, b, "see the reports so far", timelineRow("disk/wipe", "SUCCESS"))
	// The action's output, sent before its next report, shows once that
	// report comes: as text, markup and all.
	const hostileLine = `<img id="injected" src=x onerror="document.title='owned'"> writing /dev/sda`
	if _, err := w.ReportActionLogs(ctx(t), &workflow.ActionLogs{WorkflowId: id, TaskName: "disk", ActionName: "image", BatchId: "ui-1",
		Lines: []*workflow.LogLine{{Stream: "stdout", Text: "image: 512 MiB written"}, {Stream: "stderr", Text: hostileLine}}}); err != nil {
		t.Fatal(err)
	}
	report(t, w, id, "disk", "image", workflow.State_STATE_RUNNING)
	uitest.Step(t, b, "see image RUNNING on the timeline", timelineRow("disk/image", "RUNNING"))
	logSel := `#logs details[data-action="disk/image"] pre`
	uitest.Step(t, b, "see the action's logs", chromedp.WaitVisible(chromedp.CSS(logSel)))
	logText := uitest.Get(t, b, "read the action's logs", chromedp.Text(chromedp.CSS(logSel)))
	if !strings.Contains(logText, "stdout: image: 512 MiB written") || !strings.Contains(logText, "stderr: "+hostileLine) {
		t.Fatalf("action logs shown:\n%s\nwant both lines, the markup as text", logText)
	}
	if n := uitest.Get(t, b, "look for injected markup", chromedp.Evaluate[int](`document.querySelectorAll("#injected").length`)); n != 0 {
		t.Fatalf("a log line became %d elements on the page", n)
	}
	report(t, w, id, "disk", "image", workflow.State_STATE_SUCCESS)
	uitest.Step(t, b, "see the timeline end", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="ended"]`)))
	timeline := uitest.Get(t, b, "read the timeline", chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#timeline tbody tr")).map(tr => tr.querySelector(".task").textContent + "/" + tr.querySelector(".action").textContent + " " + tr.dataset.state)`))
	var reported []string
	for _, e := range timeline {
		if strings.HasPrefix(e, "disk/") {
			reported = append(reported, e)
		}
	}
	if want := []string{"disk/wipe RUNNING", "disk/wipe SUCCESS", "disk/image RUNNING", "disk/image SUCCESS"}; strings.Join(reported, ",") != strings.Join(want, ",") {
		t.Fatalf("timeline %v, want the reports %v", timeline, want)
	}
	// The machine's first boot into its OS comes after the end: its note
	// (as herd-metadata sends it) still shows, live.
	uitest.Step(t, b, "see the page follow after the end", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="ended"]`)))
	if live := uitest.Get(t, b, "read the live badge", chromedp.Text(chromedp.CSS("#live"))); !strings.Contains(live, "following") {
		t.Fatalf("after the end the page says %q, want it following the first boot", live)
	}
	const readNote = "metadata read by cloud-init (first: meta-data/instance-id)"
	noted, err := workflow.NewWorkflowServiceClient(s.Dial(servertest.ServiceToken)).RecordBootEvent(ctx(t),
		&workflow.BootEvent{HardwareId: hw1, Message: readNote})
	if err != nil || noted.GetWorkflowId() != id {
		t.Fatalf("note after the end: on %q (%v), want workflow %s", noted.GetWorkflowId(), err, id)
	}
	uitest.Step(t, b, "see the note after the end", chromedp.WaitVisible(chromedp.CSS(`#timeline tbody tr[data-action="boot/boot"]:last-child`)))
	noteText := uitest.Get(t, b, "read the note after the end", chromedp.Text(chromedp.CSS(`#timeline tbody tr:last-child td.message`)))
	if noteText != readNote {
		t.Fatalf("last timeline row says %q, want %q", noteText, readNote)
	}
	meta := uitest.Get(t, b, "read the metadata", chromedp.Text(chromedp.CSS("#metadata")))
	if strings.Contains(meta, "hunter2-ui") || !strings.Contains(meta, "root_password") || !strings.Contains(meta, "node-1") {
		t.Fatalf("metadata shown:\n%s\nwant root_password masked, the rest shown", meta)
	}
	wfState := uitest.Get(t, b, "read the workflows", chromedp.Text(chromedp.CSS(`#workflows tr[data-id="`+id+`"] .badge`)))
	if !strings.EqualFold(wfState, "SUCCESS") {
		t.Fatalf("machine page shows workflow %s as %q, want SUCCESS", id, wfState)
	}

	uitest.Step(t, b, "back on the fleet, the workflow done", chromedp.Navigate(s.HTTP+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-state="SUCCESS"][data-progress="2/2"]`)))

	// The filters hide what does not match.
	uitest.Step(t, b, "filter by text", chromedp.SendKeys(chromedp.CSS("#filter"), "no-such-machine"), chromedp.WaitNotPresent(chromedp.CSS(row)))
	uitest.SetControl(t, b, "filter", "NODE-1")
	uitest.Step(t, b, "filter by text, any case", chromedp.WaitVisible(chromedp.CSS(row)))
	uitest.SetControl(t, b, "filter", "")
	uitest.SetControl(t, b, "state", "FAILED")
	uitest.Step(t, b, "filter by state", chromedp.WaitNotPresent(chromedp.CSS(row)))

	// A change without the session's CSRF token, or from another site, is
	// refused; the session survives both.
	sessionCookie := c.Name + "=" + c.Value
	for _, tc := range []struct {
		name   string
		form   url.Values
		origin string
	}{
		{"no CSRF token", url.Values{}, ""},
		{"wrong CSRF token", url.Values{"csrf": {"forged"}}, ""},
		{"another origin", url.Values{"csrf": {"forged"}}, "http://attacker.example"},
	} {
		req, _ := http.NewRequest(http.MethodPost, s.HTTP+"/ui/logout", strings.NewReader(tc.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", sessionCookie)
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("logout with %s: %d, want 403", tc.name, res.StatusCode)
		}
	}

	// Logging out (the page's own form) ends the session.
	uitest.Step(t, b, "log out", chromedp.Click(chromedp.CSS(".logout button")), chromedp.WaitVisible(chromedp.CSS("#token")))
	req, _ := http.NewRequest(http.MethodGet, s.HTTP+"/ui/events", nil)
	req.Header.Set("Cookie", sessionCookie)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the fleet stream after logout: %d, want 401", res.StatusCode)
	}
}

// uiClient is an HTTP client that shows redirects instead of following
// them.
var uiClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// uiDo sends one request to the UI with the given cookie and Origin
// ("" : none); the caller closes the body.
func uiDo(t *testing.T, method, u, cookie, origin string, form url.Values) *http.Response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	res, err := uiClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// probeWorkflow is a workflow id no test makes.
const probeWorkflow = "00000000-0000-4000-8000-000000000000"

// TestUIRefusesBadInput sends the UI what a browser would not: bad and
// hostile logins, forged cookies, unknown paths; then checks that a live
// stream ends when the server stops (and the server stops cleanly).
func TestUIRefusesBadInput(t *testing.T) {
	s := servertest.Start(t)
	ui := s.HTTP + "/ui/"
	for _, tc := range []struct {
		name, method, path, cookie, origin string
		form                               url.Values
		code                               int
		mention                            string
	}{
		{"fleet without a session", "GET", "", "", "", nil, http.StatusSeeOther, ""},
		{"fleet with a forged cookie", "GET", "", "herd_session=forged", "", nil, http.StatusSeeOther, ""},
		{"stream without a session", "GET", "events", "", "", nil, http.StatusUnauthorized, "not logged in"},
		{"logs without a session", "GET", "workflow/" + probeWorkflow + "/logs", "", "", nil, http.StatusUnauthorized, "not logged in"},
		{"power states without a session", "GET", "power", "", "", nil, http.StatusUnauthorized, "not logged in"},
		{"job stream without a session", "GET", "job/" + probeWorkflow + "/events", "", "", nil, http.StatusUnauthorized, "not logged in"},
		{"power without a session", "POST", "machine/" + hw1 + "/bmc", "", "", url.Values{"action": {"on"}}, http.StatusUnauthorized, "not logged in"},
		{"logout without a session", "POST", "logout", "", "", url.Values{}, http.StatusUnauthorized, "not logged in"},
		{"empty token", "POST", "login", "", "", url.Values{"token": {""}}, http.StatusBadRequest, "enter the admin token"},
		{"token with a space", "POST", "login", "", "", url.Values{"token": {"two words"}}, http.StatusBadRequest, "character"},
		{"token with a NUL", "POST", "login", "", "", url.Values{"token": {"a\x00b"}}, http.StatusBadRequest, "character"},
		{"oversized token", "POST", "login", "", "", url.Values{"token": {strings.Repeat("a", 5000)}}, http.StatusBadRequest, "longer"},
		{"wrong token", "POST", "login", "", "", url.Values{"token": {"wrong"}}, http.StatusUnauthorized, "refused"},
		{"worker-looking token", "POST", "login", "", "", url.Values{"token": {"hw.eyJ.sig"}}, http.StatusUnauthorized, "refused"},
		{"right token from another site", "POST", "login", "", "http://attacker.example", url.Values{"token": {adminToken}}, http.StatusForbidden, "another site"},
		{"right token from a sandboxed frame", "POST", "login", "", "null", url.Values{"token": {adminToken}}, http.StatusForbidden, "another site"},
		{"unknown page", "GET", "nope", "", "", nil, http.StatusNotFound, ""},
		{"path escaping the assets", "GET", "static/..%2fui.go", "", "", nil, http.StatusNotFound, ""},
		{"an asset", "GET", "static/fleet.js", "", "", nil, http.StatusOK, "EventSource"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := uiDo(t, tc.method, ui+tc.path, tc.cookie, tc.origin, tc.form)
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.code || !strings.Contains(string(b), tc.mention) {
				t.Fatalf("%d %q, want %d mentioning %q", res.StatusCode, b, tc.code, tc.mention)
			}
			if len(res.Cookies()) != 0 {
				t.Fatalf("refused request set cookies: %v", res.Cookies())
			}
			if res.StatusCode == http.StatusSeeOther && res.Header.Get("Location") != "/ui/login" {
				t.Fatalf("redirected to %q, want /ui/login", res.Header.Get("Location"))
			}
		})
	}

	res := uiDo(t, "GET", ui+"login", "", "", nil)
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || res.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("login page headers: CSP %q, X-Frame-Options %q", csp, res.Header.Get("X-Frame-Options"))
	}

	res = uiDo(t, "POST", ui+"login", "", s.HTTP, url.Values{"token": {adminToken}})
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/" || len(res.Cookies()) != 1 {
		t.Fatalf("login: %d to %q with cookies %v", res.StatusCode, res.Header.Get("Location"), res.Cookies())
	}
	c := res.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.Secure {
		t.Fatalf("session cookie %+v", c)
	}
	cookie := c.Name + "=" + c.Value

	// The logs route refuses an id that is not one, and says when the API
	// knows no such workflow.
	for path, want := range map[string]int{"workflow/not-a-uuid/logs": http.StatusBadRequest, "workflow/" + probeWorkflow + "/logs": http.StatusNotFound} {
		res := uiDo(t, "GET", ui+path, cookie, "", nil)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("%s: %d %q, want %d", path, res.StatusCode, b, want)
		}
	}

	// A live stream: the snapshot ends with "synced", and the stream ends
	// when the server stops.
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	res = uiDo(t, "GET", ui+"events", cookie, "", nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(res.Body)
	var got []string
	for lines.Scan() && lines.Text() != "event: synced" {
		got = append(got, lines.Text())
	}
	if !strings.Contains(strings.Join(got, "\n"), `"hostname":"node-1"`) {
		t.Fatalf("stream before synced:\n%s", strings.Join(got, "\n"))
	}
	s.Stop()
	for lines.Scan() {
	}
	res.Body.Close()
}

const screenshotTemplate = `version: "0.1"
name: debian-12
tasks:
  - name: "provision"
    worker: "{{.device_1}}"
    actions:
      - name: "wipe-disks"
        image: herd/wipe
        timeout: 600
      - name: "stream-image"
        image: herd/image2disk
        timeout: 1800
      - name: "write-netplan"
        image: herd/writefile
        timeout: 60
      - name: "install-grub"
        image: herd/grub
        timeout: 300
      - name: "kexec"
        image: herd/kexec
        timeout: 60
`

// TestUIScreenshots fills a real herd-server with a small fleet in every
// state and takes the fleet and machine pages at 1280x800: into
// HERD_UI_SCREENSHOTS when set (make ui-screenshots: docs/ui/), else a
// temporary directory. It fails unless both pages show what it made.
func TestUIScreenshots(t *testing.T) {
	dir := os.Getenv("HERD_UI_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	s := servertest.Start(t)
	b := uitest.Browser(t)
	hc := hardware.NewHardwareServiceClient(s.Dial(adminToken))
	const n = 12
	id := func(i int) string { return fmt.Sprintf("5c0e0000-0000-4000-8000-%012d", i) }
	mac := func(i int) string { return fmt.Sprintf("52:54:00:1a:00:%02x", i) }
	servertest.PushHardware(t, hc, 0, n, func(i int) *hardware.Hardware {
		return &hardware.Hardware{Id: id(i), Metadata: `{"instance":{"hostname":"rack1-node` + fmt.Sprint(i+1) + `","root_password":"s3cret"}}`,
			Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
				Dhcp: &hardware.Hardware_DHCP{Mac: mac(i), Hostname: fmt.Sprintf("rack1-node%d", i+1), Arch: "x86_64", Uefi: i%3 != 0,
					Ip: &hardware.Hardware_DHCP_IP{Address: fmt.Sprintf("10.20.0.%d", 11+i), Netmask: "255.255.255.0", Gateway: "10.20.0.1"}},
				Netboot: &hardware.Hardware_Netboot{AllowPxe: i < 9, AllowWorkflow: true}}}}}
	})
	s.MustHerd(screenshotTemplate, "template", "create")
	// Machines 0-8 get a workflow each, advanced to a different point;
	// 9-11 have none.
	actions := []string{"wipe-disks", "stream-image", "write-netplan", "install-grub", "kexec"}
	for i := range 9 {
		wid := s.CreateWorkflow("debian-12", `{"device_1":"`+mac(i)+`"}`)
		w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(id(i))))
		done := []int{5, 5, 5, 3, 2, 1, 0, 4, -1}[i] // actions succeeded; 8: pending
		say := func(a int, state workflow.State, msg string) {
			_, err := w.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: wid, TaskName: "provision",
				ActionName: actions[a], ActionStatus: state, Seconds: int64(3 + 17*a), Message: msg})
			if err != nil {
				t.Fatal(err)
			}
		}
		if done >= 0 { // the way to the OSIE, as herd-boots notes it
			notes := workflow.NewWorkflowServiceClient(s.Dial(servertest.ServiceToken))
			ip := fmt.Sprintf("10.20.0.%d", 11+i)
			for _, note := range []string{"dhcp offer " + ip + ": http boot ipxe.efi", "dhcp offer " + ip + ": ipxe script",
				"ipxe script served", "kernel fetched", "initrd fetched"} {
				if _, err := notes.RecordBootEvent(ctx(t), &workflow.BootEvent{HardwareId: id(i), Message: note}); err != nil {
					t.Fatal(err)
				}
			}
		}
		for a := 0; a < done && a < len(actions); a++ {
			say(a, workflow.State_STATE_RUNNING, "started")
			say(a, workflow.State_STATE_SUCCESS, "finished")
		}
		switch {
		case i == 7: // one failed
			say(done, workflow.State_STATE_RUNNING, "started")
			say(done, workflow.State_STATE_FAILED, "exit status 1: kexec_load failed: Operation not permitted")
		case done >= 0 && done < len(actions):
			say(done, workflow.State_STATE_RUNNING, "started")
		}
	}

	uitest.Login(t, b, s.HTTP, servertest.AdminToken)
	uitest.Step(t, b, "see the fleet", chromedp.EmulateViewport(1280, 800), chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-state="FAILED"]`)), chromedp.WaitVisible(chromedp.CSS(`tr[data-state="PENDING"]`)))
	shoot := func(name string) {
		t.Helper()
		png := uitest.Get(t, b, "screenshot "+name, chromedp.CaptureScreenshot())
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := pngDecode(png)
		if err != nil || img.X != 1280 || img.Y != 800 {
			t.Fatalf("%s: %v (%v), want a 1280x800 PNG", name, img, err)
		}
	}
	shown := uitest.Get(t, b, "count the rows", chromedp.Evaluate[int](`document.querySelectorAll("#fleet tbody tr").length`))
	if shown != n {
		t.Fatalf("fleet shows %d machines, want %d", shown, n)
	}
	shoot("fleet.png")

	uitest.Step(t, b, "open a machine mid-way", chromedp.Navigate(s.HTTP+"/ui/machine/"+id(4)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline tbody tr[data-action="provision/stream-image"][data-state="RUNNING"]`)))
	shoot("machine.png")
}

// pngDecode reads a PNG's size.
func pngDecode(b []byte) (image.Point, error) {
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	return image.Point{X: cfg.Width, Y: cfg.Height}, err
}

// TestUIPower shows the BMC power state on the fleet and machine pages,
// queues power and netboot jobs from the machine page's buttons and
// follows them (no herd-bmc runs: they stay PENDING), shows the API's
// refusal for a machine without a BMC, and refuses a forged change.
func TestUIPower(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "bmc.key")
	line, err := keyring.NewLine()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, "--bmc-key-file", keyFile)
	s.MustHerd("s3cret\n", "bmc", "credential", "set", "rack1", "--username", "admin", "--password-file", "-")
	s.MustHerd(hardwareWithBMC(t, "rack1"), "hardware", "push")
	s.MustHerd(readFile(t, "hardware-2.json"), "hardware", "push")
	b := uitest.Browser(t)
	uitest.Login(t, b, s.HTTP, servertest.AdminToken)

	uitest.Step(t, b, "see the power states on the fleet", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+hw1+`"][data-power="unknown"] td.bmc .power`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+hw2+`"][data-power="-"]`)))

	jobs := func() []*machine.Job {
		list, err := machine.NewMachineServiceClient(s.Dial(adminToken)).ListJobs(ctx(t), &machine.ListJobsRequest{HardwareId: hw1})
		if err != nil {
			t.Fatal(err)
		}
		var mine []*machine.Job
		for _, j := range list.GetJobs() {
			if j.GetOrigin() == "operator" {
				mine = append(mine, j)
			}
		}
		return mine
	}
	uitest.Step(t, b, "open the machine with a BMC", chromedp.Navigate(s.HTTP+"/ui/machine/"+hw1),
		chromedp.WaitVisible(chromedp.CSS(`#power[data-state=""]`)))
	for _, tc := range []struct{ button, what string }{{"on", "power on"}, {"netboot", "netboot"}} {
		uitest.Step(t, b, "press "+tc.button, chromedp.Click(chromedp.CSS(`#bmc-actions button[data-action="`+tc.button+`"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#job[data-what="`+tc.what+`"][data-state="PENDING"]`)))
		what := uitest.Get(t, b, "read the job", chromedp.Text(chromedp.CSS("#job-what")))
		id := uitest.Get(t, b, "read the job id", chromedp.Text(chromedp.CSS("#job-id")))
		queued := jobs()
		if what != tc.what || len(queued) == 0 || queued[0].GetId() != id {
			t.Fatalf("after %s the page shows job %s %q; the API has %v", tc.button, id, what, queued)
		}
	}

	uitest.Step(t, b, "open the machine without a BMC", chromedp.Navigate(s.HTTP+"/ui/machine/"+hw2),
		chromedp.WaitVisible(chromedp.CSS(`#power[data-state="-"]`)),
		chromedp.Click(chromedp.CSS(`#bmc-actions button[data-action="off"]`)), chromedp.WaitVisible(chromedp.CSS("#bmc-error")))
	refusal := uitest.Get(t, b, "read the refusal", chromedp.Text(chromedp.CSS("#bmc-error")))
	if !strings.Contains(refusal, "has no BMC") {
		t.Fatalf("power off of a machine without a BMC says %q, want the API's refusal", refusal)
	}

	// Forged changes: no or a wrong CSRF token, another origin, an action
	// the buttons do not have; none queues a job.
	c := uitest.Cookies(t, b, s.HTTP)[0]
	cookie := c.Name + "=" + c.Value
	before := len(jobs())
	csrf := uitest.Get(t, b, "read the CSRF token", chromedp.Evaluate[string](`document.getElementById("bmc-actions").dataset.csrf`))
	for _, tc := range []struct {
		name   string
		form   url.Values
		origin string
		code   int
	}{
		{"no CSRF token", url.Values{"action": {"on"}}, "", http.StatusForbidden},
		{"wrong CSRF token", url.Values{"action": {"on"}, "csrf": {"forged"}}, "", http.StatusForbidden},
		{"another origin", url.Values{"action": {"on"}, "csrf": {csrf}}, "http://attacker.example", http.StatusForbidden},
		{"unknown action", url.Values{"action": {"reset"}, "csrf": {csrf}}, "", http.StatusBadRequest},
	} {
		res := uiDo(t, "POST", s.HTTP+"/ui/machine/"+hw1+"/bmc", cookie, tc.origin, tc.form)
		res.Body.Close()
		if res.StatusCode != tc.code {
			t.Fatalf("power with %s: %d, want %d", tc.name, res.StatusCode, tc.code)
		}
	}
	if after := len(jobs()); after != before {
		t.Fatalf("forged requests queued %d jobs", after-before)
	}
}

// TestUIChanges makes the UI's changes in the browser and checks them
// with the API and the CLI: netboot off and on again (the record
// otherwise unchanged), a workflow created from the templates page (in
// `herd workflow list`), a finished workflow deleted; the API's refusal
// shown; forged changes refused on every route.
func TestUIChanges(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd(uiTemplate, "template", "create")
	hc := hardware.NewHardwareServiceClient(s.Dial(adminToken))
	record := func() *hardware.Hardware {
		hw, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1})
		if err != nil {
			t.Fatal(err)
		}
		return hw
	}
	before := record()
	b := uitest.Browser(t)
	uitest.Login(t, b, s.HTTP, servertest.AdminToken)
	uitest.Step(t, b, "reach the fleet", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))

	// Netboot off, then on: only allow_pxe changes, and back.
	machinePage := s.HTTP + "/ui/machine/" + hw1
	uitest.Step(t, b, "switch netboot off", chromedp.Navigate(machinePage), chromedp.Click(chromedp.CSS("#netboot-off")),
		chromedp.WaitVisible(chromedp.CSS(`#interfaces td.netboot-off`)))
	off := record()
	if off.GetNetwork().GetInterfaces()[0].GetNetboot().GetAllowPxe() {
		t.Fatal("netboot still allowed after the UI switched it off")
	}
	uitest.Step(t, b, "switch netboot on", chromedp.Click(chromedp.CSS("#netboot-on")), chromedp.WaitVisible(chromedp.CSS(`#interfaces td.netboot-on`)))
	on := record()
	on.Version, before.Version = 0, 0
	if !proto.Equal(on, before) {
		t.Fatalf("after off and on the record is\n%v\nwant as it was\n%v", on, before)
	}

	// A workflow from the templates page.
	uitest.Step(t, b, "open the templates", chromedp.Click(chromedp.CSS(`header nav a[href="/ui/templates"]`)),
		chromedp.WaitVisible(chromedp.CSS("#templates")), chromedp.Click(chromedp.CSS(`#templates td.name a`)),
		chromedp.WaitVisible(chromedp.CSS("#template-data")))
	yaml := uitest.Get(t, b, "read the YAML", chromedp.Text(chromedp.CSS("#template-data")))
	if !strings.Contains(yaml, "name: ui-two-steps") || !strings.Contains(yaml, `worker: "{{.device_1}}"`) {
		t.Fatalf("template shown:\n%s", yaml)
	}
	uitest.Step(t, b, "create a workflow", chromedp.SetValue(chromedp.CSS("#create-mac"), mac1), chromedp.Click(chromedp.CSS(`#create-workflow button`)),
		chromedp.WaitVisible(chromedp.CSS("#created")))
	id := uitest.Get(t, b, "read the new workflow", chromedp.Text(chromedp.CSS("#created a")))
	if list := s.MustHerd("", "workflow", "list"); !strings.Contains(list, id) {
		t.Fatalf("workflow %q created in the UI is not in herd workflow list:\n%s", id, list)
	}

	// It is not finished: no delete button; finished, one that works.
	uitest.Step(t, b, "see it on the machine page", chromedp.Navigate(machinePage), chromedp.WaitVisible(chromedp.CSS(`#workflows tr[data-id="`+id+`"]`)))
	if n := uitest.Get(t, b, "count delete buttons", chromedp.Evaluate[int](`document.querySelectorAll("#workflows form.delete").length`)); n != 0 {
		t.Fatalf("a pending workflow offers %d delete buttons", n)
	}
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	for _, a := range []string{"wipe", "image"} {
		report(t, w, id, "disk", a, workflow.State_STATE_RUNNING)
		report(t, w, id, "disk", a, workflow.State_STATE_SUCCESS)
	}
	uitest.Step(t, b, "delete it", chromedp.Reload(), chromedp.Click(chromedp.CSS(`#workflows tr[data-id="`+id+`"] form.delete button`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#workflows tr[data-id="`+id+`"]`)))
	if list := s.MustHerd("", "workflow", "list"); strings.Contains(list, id) {
		t.Fatalf("deleted workflow %s still in herd workflow list:\n%s", id, list)
	}

	// The API's refusal is shown; forged changes are refused.
	c := uitest.Cookies(t, b, s.HTTP)[0]
	cookie := c.Name + "=" + c.Value
	csrf := uitest.Get(t, b, "read the CSRF token", chromedp.Evaluate[string](`document.querySelector("#netboot-form input[name=csrf]").value`))
	var templateID string
	for _, f := range strings.FieldsFunc(s.MustHerd("", "template", "list", "-o", "json"), func(r rune) bool { return r == '"' }) {
		if len(f) == 36 && strings.Count(f, "-") == 4 {
			templateID = f
			break
		}
	}
	if templateID == "" {
		t.Fatal("no template id in herd template list -o json")
	}
	// The workflow's end switched netboot off (the server's toggle): the
	// record's version tells whether a forged change went through.
	version := record().GetVersion()
	for _, tc := range []struct {
		name, path string
		form       url.Values
		code       int
		mention    string
	}{
		{"create for a machine no record has", "template/" + templateID + "/workflow", url.Values{"mac": {"02:00:00:00:00:99"}, "csrf": {csrf}}, 0, ""},
		{"create with a bad MAC", "template/" + templateID + "/workflow", url.Values{"mac": {"<script>"}, "csrf": {csrf}}, http.StatusBadRequest, "MAC"},
		{"netboot neither on nor off", "machine/" + hw1 + "/netboot", url.Values{"netboot": {"maybe"}, "csrf": {csrf}}, http.StatusBadRequest, "on or off"},
		{"delete an unknown workflow", "workflow/" + probeWorkflow + "/delete", url.Values{"machine": {hw1}, "csrf": {csrf}}, http.StatusNotFound, probeWorkflow},
		{"create, wrong CSRF token", "template/" + templateID + "/workflow", url.Values{"mac": {mac1}, "csrf": {"forged"}}, http.StatusForbidden, "CSRF"},
		{"netboot, wrong CSRF token", "machine/" + hw1 + "/netboot", url.Values{"netboot": {"off"}, "csrf": {"forged"}}, http.StatusForbidden, "CSRF"},
		{"delete, wrong CSRF token", "workflow/" + probeWorkflow + "/delete", url.Values{"machine": {hw1}, "csrf": {"forged"}}, http.StatusForbidden, "CSRF"},
	} {
		res := uiDo(t, "POST", s.HTTP+"/ui/"+tc.path, cookie, "", tc.form)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if tc.code == 0 {
			// Whatever the API says of it, the page says it and no
			// workflow is made.
			if res.StatusCode < 400 || !strings.Contains(string(body), "create a workflow:") {
				t.Fatalf("%s: %d %s, want the API's refusal", tc.name, res.StatusCode, body)
			}
			continue
		}
		if res.StatusCode != tc.code || !strings.Contains(string(body), tc.mention) {
			t.Fatalf("%s: %d %s, want %d mentioning %q", tc.name, res.StatusCode, body, tc.code, tc.mention)
		}
	}
	if v := record().GetVersion(); v != version {
		t.Fatalf("the record went from version %d to %d: a refused netboot change went through", version, v)
	}
	live, err := workflow.NewWorkflowServiceClient(s.Dial(adminToken)).ListWorkflows(ctx(t), &workflow.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if wf, err := live.Recv(); err != io.EOF {
		t.Fatalf("after the one workflow was deleted, a refused create left %v (%v)", wf, err)
	}
}
