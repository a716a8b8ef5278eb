// Package runner executes BMC jobs: it takes them from a Source, runs
// each through the driver of its BMC's protocol with bounded attempts,
// backoff and a deadline, at most one job per BMC and a global limit at
// once, and reports every state change back to the Source.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
)

// State is a job's state, as herd-server records it.
type State string

const (
	StatePending State = "PENDING"
	StateRunning State = "RUNNING"
	StateSuccess State = "SUCCESS"
	StateFailed  State = "FAILED"
	StateTimeout State = "TIMEOUT"
)

// Kind is what a job does.
type Kind string

const (
	KindPowerStatus Kind = "power-status"
	KindPower       Kind = "power"
	KindBootDevice  Kind = "bootdev"
	// KindNetboot is next boot from the network, then a power cycle (or
	// power on when the machine is off): the step that starts provisioning.
	KindNetboot Kind = "netboot"
)

// Job is one request for one machine's BMC.
type Job struct {
	ID      string
	Machine string // hardware id, for the record and logs
	BMC     driver.BMC
	Kind    Kind
	Action  driver.PowerAction // KindPower
	Device  driver.BootDevice  // KindBootDevice
	Options driver.BootOptions // KindBootDevice, KindNetboot (EFI)
	// Deadline ends the whole job, all attempts included (herd-server's,
	// which times the job out then); zero means Config.JobTimeout from
	// the job's start.
	Deadline time.Time
}

// key is what the per-BMC limit counts: its protocol and address:port.
func (j Job) key() string { return j.BMC.String() }

// Attempt is one try of a job.
type Attempt struct {
	N     int
	Start time.Time
	End   time.Time
	Error string // empty on success
}

// Result is a job's state as the runner reports it: once RUNNING at the
// start of each attempt, then once SUCCESS, FAILED or TIMEOUT.
type Result struct {
	JobID    string
	Machine  string
	Kind     Kind
	State    State
	Attempts []Attempt
	// Answer is the BMC's answer on success: the power state for a
	// status job ("on", "off"), what was done otherwise.
	Answer string
	// Message names the BMC and the cause when the job did not succeed.
	Message string
}

// Source is where jobs come from and where their states go. herd-server
// is the Source in production (over gRPC, with the scoped credential).
type Source interface {
	// Next blocks until a job is there or ctx ends.
	Next(ctx context.Context) (Job, error)
	// Report records a job's state; an error is logged, not retried here.
	Report(ctx context.Context, r Result) error
}

// Config tunes a Runner.
type Config struct {
	Global     int           // jobs at once over all BMCs (default 16)
	JobTimeout time.Duration // default deadline of a job (default 2 min)
	Policy     Policy        // attempts and backoff (default 3, 1 s doubling to 10 s)
}

func (c Config) withDefaults() Config {
	if c.Global <= 0 {
		c.Global = 16
	}
	if c.JobTimeout <= 0 {
		c.JobTimeout = 2 * time.Minute
	}
	if c.Policy.MaxAttempts <= 0 {
		c.Policy.MaxAttempts = 3
	}
	if c.Policy.BaseBackoff <= 0 {
		c.Policy.BaseBackoff = time.Second
	}
	if c.Policy.MaxBackoff <= 0 {
		c.Policy.MaxBackoff = 10 * time.Second
	}
	return c
}

// maxTakers bounds the Next calls in flight at once.
const maxTakers = 8

// Runner runs jobs.
type Runner struct {
	cfg     Config
	drivers map[driver.Protocol]driver.Driver
	src     Source
	log     *slog.Logger
}

// New returns a Runner with one driver per protocol.
func New(cfg Config, drivers map[driver.Protocol]driver.Driver, src Source, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg.withDefaults(), drivers: drivers, src: src, log: log}
}

// Run takes jobs until ctx ends or the Source fails, then waits for the
// running jobs (their contexts are cancelled) and returns.
func (r *Runner) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	incoming := make(chan Job)
	// Several takers at once: taking a job is a round trip to herd-server,
	// and one taker alone held a fleet's concurrency to its rate (6 of 16
	// jobs at once in bench-bmc).
	takers := min(r.cfg.Global, maxTakers)
	srcErr := make(chan error, takers)
	// held bounds the jobs taken and not yet ended (running or waiting for
	// their BMC) to twice the global limit: jobs beyond stay with the
	// server, free for another herd-bmc, instead of ageing in this queue.
	held := make(chan struct{}, 2*r.cfg.Global)
	for range takers {
		go func() {
			for {
				select {
				case held <- struct{}{}:
				case <-ctx.Done():
					srcErr <- ctx.Err()
					return
				}
				j, err := r.src.Next(ctx)
				if err != nil {
					srcErr <- err
					return
				}
				select {
				case incoming <- j:
				case <-ctx.Done():
					srcErr <- ctx.Err()
					return
				}
			}
		}()
	}

	s := newSched(r.cfg.Global)
	finished := make(chan string)
	var wg sync.WaitGroup
	start := func(jobs []Job) {
		for _, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.runJob(ctx, j)
				finished <- j.key()
			}()
		}
	}
	var err error
loop:
	for {
		select {
		case j := <-incoming:
			start(s.add(j))
		case k := <-finished:
			<-held
			start(s.done(k))
		case err = <-srcErr:
			break loop
		}
	}
	cancel()
	// Drain: running jobs end promptly on the cancelled ctx.
	go func() { wg.Wait(); close(finished) }()
	for range finished {
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("job source: %w", err)
}

// runJob runs j's attempts and reports its states.
func (r *Runner) runJob(parent context.Context, j Job) {
	deadline := j.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(r.cfg.JobTimeout)
	}
	timeout := time.Until(deadline).Round(time.Millisecond)
	ctx, cancel := context.WithDeadline(parent, deadline)
	defer cancel()
	res := Result{JobID: j.ID, Machine: j.Machine, Kind: j.Kind}
	log := r.log.With("job", j.ID, "hardware_id", j.Machine, "bmc", j.BMC.String(), "kind", j.Kind)

	report := func() {
		// Reports outlive the job's deadline: a TIMEOUT must be recorded.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(parent), 10*time.Second)
		defer rcancel()
		if err := r.src.Report(rctx, res); err != nil {
			log.Warn("reporting job state", "state", res.State, "err", err)
		}
	}

	if !time.Now().Before(deadline) {
		res.State, res.Message = StateTimeout, "the job's deadline passed while it waited for its BMC, before any attempt"
		log.Warn("bmc job ended", "state", res.State, "attempts", 0)
		report()
		return
	}
	for n := 1; ; n++ {
		res.State = StateRunning
		res.Attempts = append(res.Attempts, Attempt{N: n, Start: time.Now()})
		report()
		answer, err := r.attempt(ctx, j)
		a := &res.Attempts[len(res.Attempts)-1]
		a.End = time.Now()
		if err == nil {
			res.State, res.Answer = StateSuccess, answer
			log.Info("bmc job done", "attempts", n, "answer", answer)
			report()
			return
		}
		if ctx.Err() != nil && !errors.Is(err, driver.ErrTimeout) {
			// The driver saw the cancel first; say what happened.
			err = driver.Fail(j.BMC, string(j.Kind), driver.ErrTimeout, fmt.Sprintf("job deadline (%s) passed: %v", timeout, err))
		}
		if parent.Err() != nil {
			err = fmt.Errorf("herd-bmc stopped during the job: %w", err)
		}
		a.Error = err.Error()
		d := Decide(r.cfg.Policy, n, err, time.Now(), deadline)
		if parent.Err() != nil {
			d = Decision{Final: StateFailed}
		}
		if !d.Retry {
			res.State, res.Message = d.Final, err.Error()
			log.Warn("bmc job ended", "state", res.State, "attempts", n, "err", err)
			report()
			return
		}
		log.Info("bmc job attempt failed, retrying", "attempt", n, "wait", d.Wait, "err", err)
		select {
		case <-time.After(d.Wait):
		case <-ctx.Done():
		}
	}
}

// attempt does j once.
func (r *Runner) attempt(ctx context.Context, j Job) (string, error) {
	d, ok := r.drivers[j.BMC.Protocol]
	if !ok {
		return "", driver.Fail(j.BMC, string(j.Kind), driver.ErrBadInput, fmt.Sprintf("no driver for protocol %q", j.BMC.Protocol))
	}
	switch j.Kind {
	case KindPowerStatus:
		st, err := d.PowerStatus(ctx, j.BMC)
		return string(st), err
	case KindPower:
		if _, err := driver.ParsePowerAction(string(j.Action)); err != nil {
			return "", driver.Fail(j.BMC, "power", driver.ErrBadInput, err.Error())
		}
		return "power " + string(j.Action) + " done", d.Power(ctx, j.BMC, j.Action)
	case KindBootDevice:
		if _, err := driver.ParseBootDevice(string(j.Device)); err != nil {
			return "", driver.Fail(j.BMC, "bootdev", driver.ErrBadInput, err.Error())
		}
		return "next boot from " + string(j.Device), d.SetBootDevice(ctx, j.BMC, j.Device, j.Options)
	case KindNetboot:
		if err := d.SetBootDevice(ctx, j.BMC, driver.BootPXE, driver.BootOptions{EFI: j.Options.EFI}); err != nil {
			return "", err
		}
		st, err := d.PowerStatus(ctx, j.BMC)
		if err != nil {
			return "", err
		}
		a := driver.PowerCycle
		if st == driver.StateOff {
			a = driver.PowerOn
		}
		return "next boot from pxe, power " + string(a) + " done", d.Power(ctx, j.BMC, a)
	}
	return "", driver.Fail(j.BMC, string(j.Kind), driver.ErrBadInput, fmt.Sprintf("unknown job kind %q", j.Kind))
}
