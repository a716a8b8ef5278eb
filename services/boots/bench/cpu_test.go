//go:build bench

package bench

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// what sysconf(_SC_CLK_TCK) returns). golang.org/x/sys/unix has no
// sysconf on Linux; USER_HZ is 100 on every architecture Go runs Linux on.
const clockTicks = 100

// parseProcStat is the user and system CPU time in /proc/PID/stat: of
// the whole process, all its threads included (dead ones too), not its
// children. The command name (field 2) may hold spaces and parentheses,
// so the fields are counted from the last ')'.
func parseProcStat(stat string) (user, system time.Duration, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, errors.New("no ')' closing the command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("%d fields after the command name, want ≥ 13", len(f))
	}
	tick := func(s string) (time.Duration, error) {
		n, err := strconv.ParseUint(s, 10, 63)
		return time.Duration(n) * time.Second / clockTicks, err
	}
	if user, err = tick(f[11]); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if system, err = tick(f[12]); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return user, system, nil
}

// cpu is the process's user and system CPU time so far. Its pid is the
// server's own: `ip netns exec` execs the server in place (see startProc).
func (p *proc) cpu(t *testing.T) (user, system time.Duration) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	user, system, err = parseProcStat(string(b))
	if err != nil {
		t.Fatalf("%s: /proc/%d/stat: %v: %q", p.name, p.cmd.Process.Pid, err, b)
	}
	return user, system
}

// cpuRun is one perfdhcp run at a fixed rate and the server's CPU time
// over it (perfdhcp's start and its 1 s wait for late answers included).
type cpuRun struct {
	run          perfRun
	user, system time.Duration
}

// perExchange is the server's CPU time per completed DORA exchange (0: no ACK).
func (c cpuRun) perExchange() time.Duration {
	if c.run.acks == 0 {
		return 0
	}
	return (c.user + c.system) / time.Duration(c.run.acks)
}

// measureCPU runs perfdhcp once at rate against p and reads p's CPU time
// before and after.
func measureCPU(t *testing.T, p *proc, pd *perfdhcp, rate int) cpuRun {
	t.Helper()
	u0, s0 := p.cpu(t)
	r := pd.run(t, p.name+" (CPU)", rate)
	u1, s1 := p.cpu(t)
	r.server = p.name
	c := cpuRun{run: r, user: u1 - u0, system: s1 - s0}
	t.Logf("%s at %d/s: %.2f s user + %.2f s system CPU for %d ACKs → %.1f µs per exchange", p.name, rate,
		c.user.Seconds(), c.system.Seconds(), r.acks, us(c.perExchange()))
	time.Sleep(time.Second) // let queues drain before the next runs
	return c
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// writeCPUTable writes the CPU-per-exchange table of runs (herd-boots'
// first) and the line comparing herd-boots with the lowest-CPU Kea
// setting and dnsmasq.
func writeCPUTable(sb *strings.Builder, runs []cpuRun) {
	sb.WriteString("| server | fixed target rate | ACK received | drops | server CPU: user + system | CPU per DORA exchange | this / herd-boots | perfdhcp's CPU per exchange |\n")
	sb.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	herd := runs[0].perExchange()
	ratio := func(c cpuRun) string {
		if herd == 0 || c.perExchange() == 0 {
			return "—"
		}
		return fmt.Sprintf("**%.2f×**", float64(c.perExchange())/float64(herd))
	}
	var kea, dnsmasq *cpuRun
	for i, c := range runs {
		per := "— (no ACK)"
		if c.perExchange() > 0 {
			per = fmt.Sprintf("**%.1f µs**", us(c.perExchange()))
		}
		drops := fmt.Sprintf("%.2f %%", 100*c.run.drops())
		if !c.run.pass() {
			drops += " (not sustained)"
		}
		fmt.Fprintf(sb, "| %s | %d/s | %d | %s | %.2f s + %.2f s | %s | %s | %.1f µs |\n", c.run.server, c.run.rate, c.run.acks, drops,
			c.user.Seconds(), c.system.Seconds(), per, ratio(c), us(c.run.perfCPU()))
		switch {
		case strings.HasPrefix(c.run.server, "kea-dhcp4"):
			if c.perExchange() > 0 && (kea == nil || c.perExchange() < kea.perExchange()) {
				kea = &runs[i]
			}
		case c.run.server == "dnsmasq":
			dnsmasq = &runs[i]
		}
	}
	var parts []string
	if kea != nil {
		parts = append(parts, fmt.Sprintf("Kea's lower-CPU setting, %s, uses %s herd-boots' CPU per exchange", kea.run.server, ratio(*kea)))
	}
	if dnsmasq != nil {
		parts = append(parts, fmt.Sprintf("dnsmasq %s (at %d/s)", ratio(*dnsmasq), dnsmasq.run.rate))
	}
	if len(parts) > 0 {
		fmt.Fprintf(sb, "\n%s.", strings.Join(parts, "; "))
	}
}

func TestCPUParseProcStat(t *testing.T) {
	// The tail of a real /proc/PID/stat line, from field 3 (state) on.
	const tail = " S 1 1234 1234 0 -1 4194560 2113 0 0 0 %s %s 0 0 20 0 7 0 123456 1262940160 11706 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	for _, tc := range []struct {
		name, stat   string
		user, system time.Duration
		bad          bool
	}{
		{name: "plain", stat: "4321 (herd-boots)" + fmt.Sprintf(tail, "37", "12"), user: 370 * time.Millisecond, system: 120 * time.Millisecond},
		{name: "space and parentheses in the name", stat: "77 (kea (dhcp4) x)" + fmt.Sprintf(tail, "1", "250"), user: 10 * time.Millisecond, system: 2500 * time.Millisecond},
		{name: "name looks like fields", stat: "9 (a) S 1 2 3 4 5 6 7 8 9 10 99 99 b)" + fmt.Sprintf(tail, "0", "3"), user: 0, system: 30 * time.Millisecond},
		{name: "empty name", stat: "5 ()" + fmt.Sprintf(tail, "100", "0"), user: time.Second},
		{name: "no closing parenthesis", stat: "5 (herd-boots S 1 2", bad: true},
		{name: "truncated", stat: "5 (herd-boots) S 1 1234 1234 0 -1 4194560 2113 0 0 0 37", bad: true},
		{name: "negative", stat: "5 (x)" + fmt.Sprintf(tail, "-1", "0"), bad: true},
		{name: "empty", stat: "", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, system, err := parseProcStat(tc.stat)
			if tc.bad {
				if err == nil {
					t.Errorf("parseProcStat(%q) = %v, %v, want an error", tc.stat, user, system)
				}
				return
			}
			if err != nil || user != tc.user || system != tc.system {
				t.Errorf("parseProcStat(%q) = %v, %v, %v, want %v, %v", tc.stat, user, system, err, tc.user, tc.system)
			}
		})
	}
}

func TestCPUOwnProcess(t *testing.T) {
	// The live format: this test process's own stat parses.
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := parseProcStat(string(b)); err != nil {
		t.Errorf("parseProcStat(/proc/self/stat %q): %v", b, err)
	}
}

func TestCPUTable(t *testing.T) {
	mk := func(server string, rate int, acks int64, user, system time.Duration) cpuRun {
		// perfdhcp's CPU: 100 µs per exchange.
		return cpuRun{run: perfRun{server: server, rate: rate, period: 10 * time.Second, discovers: int64(rate) * 10, acks: acks, cpu: time.Duration(acks) * 100 * time.Microsecond},
			user: user, system: system}
	}
	var sb strings.Builder
	writeCPUTable(&sb, []cpuRun{
		mk("herd-boots", 2000, 20000, 200*time.Millisecond, 100*time.Millisecond),                  // 15 µs
		mk("kea-dhcp4 (multi-threaded)", 2000, 20000, 900*time.Millisecond, 300*time.Millisecond),  // 60 µs
		mk("kea-dhcp4 (single-threaded)", 2000, 20000, 600*time.Millisecond, 300*time.Millisecond), // 45 µs
		mk("dnsmasq", 50, 500, 1500*time.Millisecond, 1500*time.Millisecond),                       // 6000 µs
	})
	got := sb.String()
	t.Log("\n" + got)
	for _, want := range []string{
		"| herd-boots | 2000/s | 20000 | 0.00 % | 0.20 s + 0.10 s | **15.0 µs** | **1.00×** | 100.0 µs |",
		"| kea-dhcp4 (single-threaded) | 2000/s | 20000 | 0.00 % | 0.60 s + 0.30 s | **45.0 µs** | **3.00×** |",
		"| dnsmasq | 50/s | 500 | 0.00 % | 1.50 s + 1.50 s | **6000.0 µs** | **400.00×** |",
		"Kea's lower-CPU setting, kea-dhcp4 (single-threaded), uses **3.00×** herd-boots' CPU per exchange; dnsmasq **400.00×** (at 50/s).",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
