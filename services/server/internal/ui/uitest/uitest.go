// Package uitest drives the web UI in a real browser for the tests and
// the benchmark: Debian's chromium, headless, through chromedp.
package uitest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Chromium is the browser the UI tests drive: Debian's chromium
// (services/server/deps.txt). Missing, the test fails under CI=true and
// is skipped elsewhere.
func Chromium(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is missing (apt-get install chromium, or scripts/deps.sh)")
		}
		t.Skip("chromium is missing (apt-get install chromium)")
	}
	return path
}

// Browser is a headless chromium with its own profile directory, at
// 1280x800; it is stopped when the test ends, and the test fails if any
// of its processes outlives it.
func Browser(t testing.TB) context.Context {
	t.Helper()
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Chromium(t)), chromedp.UserDataDir(profile),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 800))
	actx, stopAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, stopBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		stopBrowser()
		stopAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() {
		stopBrowser()
		stopAlloc() // kills the browser and waits for it
		if left := processesNaming(profile); len(left) > 0 {
			t.Errorf("chromium processes left running: %v", left)
		}
	})
	return bctx
}

// processesNaming are the pids whose command line mentions s.
func processesNaming(s string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && strings.Contains(string(cmdline), s) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			pids = append(pids, pid)
		}
	}
	return pids
}

// Step runs browser actions, failing the test after 30 s.
func Step(t testing.TB, b context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	Get(t, b, what, chromedp.Steps(actions...))
}

// Get runs one browser action and returns its value, failing the test
// after 30 s.
func Get[T any](t testing.TB, b context.Context, what string, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		page, _ := chromedp.Run(b, chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("%s: %v\npage: %s", what, err, page)
	}
	return v
}

// SetControl sets the value of the page's control id and tells the page,
// as typing or picking would.
func SetControl(t testing.TB, b context.Context, id, value string) {
	t.Helper()
	Get(t, b, "set "+id, chromedp.Evaluate[bool](`(() => { const c = document.getElementById(`+strconv.Quote(id)+`);
		c.value = `+strconv.Quote(value)+`; return c.dispatchEvent(new Event(c.tagName === "SELECT" ? "change" : "input")); })()`))
}

// Cookies are the browser's cookies for the UI.
func Cookies(t testing.TB, b context.Context, base string) []*network.Cookie {
	t.Helper()
	res, err := chromedp.Call(b, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Cookies
}

// Login submits token on the login page.
func Login(t testing.TB, b context.Context, base, token string) {
	t.Helper()
	Step(t, b, "log in", chromedp.Navigate(base+"/ui/login"), chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Submit(chromedp.CSS("#token")))
}
