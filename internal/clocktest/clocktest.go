// Package clocktest is a clock that tests move by hand, for the leases,
// ramps, staleness and revert timers that hearth measures in time. It has
// both of the gateway's clocks: a wall clock that can be stepped on its
// own, and a monotonic clock that only Advance moves.
package clocktest

import (
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// Clock is a manual clock, safe for concurrent use. Its zero value reads
// the zero time; use New.
type Clock struct {
	mu      sync.Mutex
	t       time.Time
	mono    time.Duration
	waiters []*waiter // timers and tickers of Hearth, armed
}

// New returns a clock whose wall clock reads t until moved, and whose
// monotonic clock reads an hour (a process that has run for a while).
func New(t time.Time) *Clock { return &Clock{t: t, mono: time.Hour} }

// Now returns the wall clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Instant returns both clocks' readings.
func (c *Clock) Instant() hearth.Instant {
	c.mu.Lock()
	defer c.mu.Unlock()
	return hearth.Instant{Wall: c.t, Mono: c.mono}
}

// Advance lets d pass: both clocks move (the wall clock backwards too when
// d is negative, which only a test can do to the monotonic one).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.mono += d
	c.fireLocked()
}

// StepWall steps the wall clock by d, as NTP, an RTC or an operator does;
// the monotonic clock does not move.
func (c *Clock) StepWall(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set sets the wall clock to t; the monotonic clock does not move.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Hearth returns the clock as a hearth.Clock: instants from both clocks,
// and timers and tickers that fire when Advance moves the monotonic clock
// past them, never on their own.
func (c *Clock) Hearth() hearth.Clock { return manual{c} }

type manual struct{ c *Clock }

func (m manual) Now() hearth.Instant { return m.c.Instant() }

func (m manual) NewTimer(d time.Duration) hearth.Timer {
	w := &waiter{c: m.c, ch: make(chan time.Time, 1)}
	w.Reset(d)
	return w
}

func (m manual) NewTicker(d time.Duration) hearth.Ticker {
	if d <= 0 {
		panic("clocktest: non-positive ticker period")
	}
	w := &waiter{c: m.c, ch: make(chan time.Time, 1), period: d}
	w.Reset(d)
	return tickerOf{w}
}

// waiter is a timer (period 0) or a ticker waiting on the monotonic clock.
type waiter struct {
	c      *Clock
	ch     chan time.Time
	period time.Duration
	at     time.Duration // monotonic reading it fires at
	armed  bool
}

func (w *waiter) C() <-chan time.Time { return w.ch }

func (w *waiter) Stop() bool {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	was := w.armed
	w.armed = false
	w.c.waiters = deleteWaiter(w.c.waiters, w)
	return was
}

func (w *waiter) Reset(d time.Duration) bool {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	was := w.armed
	w.c.waiters = deleteWaiter(w.c.waiters, w)
	w.at, w.armed = w.c.mono+d, true
	w.c.waiters = append(w.c.waiters, w)
	w.c.fireLocked()
	return was
}

type tickerOf struct{ w *waiter }

func (t tickerOf) C() <-chan time.Time   { return t.w.ch }
func (t tickerOf) Stop()                 { t.w.Stop() }
func (t tickerOf) Reset(d time.Duration) { t.w.period = d; t.w.Reset(d) }

func deleteWaiter(ws []*waiter, w *waiter) []*waiter {
	for i, x := range ws {
		if x == w {
			return append(ws[:i], ws[i+1:]...)
		}
	}
	return ws
}

// fireLocked sends on every timer and ticker that is due, as the runtime
// does: at most one pending tick, the others dropped.
func (c *Clock) fireLocked() {
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at > c.mono {
			keep = append(keep, w)
			continue
		}
		select {
		case w.ch <- c.t:
		default:
		}
		if w.period <= 0 {
			w.armed = false
			continue
		}
		for w.at <= c.mono {
			w.at += w.period
		}
		keep = append(keep, w)
	}
	c.waiters = keep
}
