package runner

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retryable reports whether a failed call to herd-server may succeed when
// sent again: the server was away or overloaded. Refusals (a report out of
// order, a workflow that ended or is not ours, a bad credential) are final.
// Reports are safe to resend: the server accepts a repeat of the last one.
func Retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return true // not from the server: the connection
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted,
		codes.Internal, codes.Unknown, codes.Canceled:
		return true
	}
	return false
}

// retry calls fn until it succeeds, fails for good, or ctx ends.
func (w *Worker) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	b := w.backoff()
	for attempt := 1; ; attempt++ {
		err := w.attempt(ctx, fn)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (gave up: %w)", what, err, context.Cause(ctx))
		}
		if !Retryable(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		w.metrics.retry()
		d := b.next()
		w.log.WarnContext(ctx, "herd-server call failed; retrying", "call", what, "attempt", attempt, "retry_in", d, "error", err)
		if err := sleep(ctx, d); err != nil {
			return fmt.Errorf("%s: gave up after %d attempts: %w", what, attempt, err)
		}
	}
}

// attempt makes one call to herd-server, given at most CallTimeout (or
// ctx's earlier deadline).
func (w *Worker) attempt(ctx context.Context, fn func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	return fn(cctx)
}

type backoff struct {
	min, max, cur time.Duration
}

func (w *Worker) backoff() *backoff { return &backoff{min: w.cfg.RetryMin, max: w.cfg.RetryMax} }

// next doubles the pause up to max, with jitter so that a rack of machines
// does not come back all at once.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
