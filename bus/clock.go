package bus

import "time"

// clock is the time the pinger, the proofs and their expiry run on: the
// real one, or, in tests, one they move by hand. Everything else (dial and
// write timeouts, reconnection waits) uses the real clock.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) stopper
}

// stopper is a timer started by clock.AfterFunc.
type stopper interface {
	// Stop prevents the call if it has not started; it reports whether it
	// did. It does not wait for a call in progress.
	Stop() bool
}

// realClock is the time package's clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
