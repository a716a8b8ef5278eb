package runner

import (
	"errors"
	"time"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
)

// Policy bounds a job's attempts.
type Policy struct {
	MaxAttempts int           // attempts per job, at least 1
	BaseBackoff time.Duration // wait before the 2nd attempt; doubles each time
	MaxBackoff  time.Duration // cap of one wait
}

// Backoff is the wait after attempt n (1-based) failed: base·2^(n-1),
// capped at MaxBackoff.
func (p Policy) Backoff(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	d := p.BaseBackoff
	for i := 1; i < n; i++ {
		d *= 2
		if p.MaxBackoff > 0 && d >= p.MaxBackoff {
			return p.MaxBackoff
		}
	}
	if p.MaxBackoff > 0 && d > p.MaxBackoff {
		return p.MaxBackoff
	}
	return d
}

// Decision is what follows a failed attempt.
type Decision struct {
	Retry bool
	Wait  time.Duration // before the next attempt, when Retry
	Final State         // FAILED or TIMEOUT, when not Retry
}

// Decide is the one place that says whether a failed attempt n
// (1-based) is tried again: only a retryable cause, while attempts are
// left and the next attempt would start before the job's deadline. A job
// past its deadline, or whose last attempt timed out, ends TIMEOUT; any
// other end is FAILED. A job is therefore never retried forever.
func Decide(p Policy, n int, err error, now, deadline time.Time) Decision {
	final := StateFailed
	if errors.Is(err, driver.ErrTimeout) || !now.Before(deadline) {
		final = StateTimeout
	}
	if !now.Before(deadline) || !driver.Retryable(err) || n >= max(p.MaxAttempts, 1) {
		return Decision{Final: final}
	}
	wait := p.Backoff(n)
	if !now.Add(wait).Before(deadline) {
		return Decision{Final: final}
	}
	return Decision{Retry: true, Wait: wait}
}
