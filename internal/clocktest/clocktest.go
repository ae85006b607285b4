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
	mu   sync.Mutex
	t    time.Time
	mono time.Duration
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
