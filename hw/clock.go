package hw

import (
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// ClockOffsetEnv names a file whose content (a Go duration such as "-1h"
// or "24h") shifts the agent's wall clock, and, when followed by the word
// "unsynced", makes the agent take the wall clock for unsynchronised
// whatever the kernel says. It exists for lab and fault scenarios, which
// must step one agent's wall clock the way NTP, a flat RTC battery or an
// operator does, without touching the machine's clock. It is unset in
// production, where the agent reads time.Now and the kernel's sync state.
const ClockOffsetEnv = "HEARTH_CLOCK_OFFSET_FILE"

// Clock is the gateway's pair of clocks: the wall clock (shifted by the
// lab offset when one is set) and the monotonic clock since the agent
// started, which no offset moves, as no real clock step moves it. Its
// methods are safe for concurrent use.
type Clock struct {
	path   string
	origin time.Time // carries the monotonic reading the clock counts from

	mu       sync.Mutex
	offset   time.Duration
	unsynced bool // the offset file says the clock is not synchronised
	readAt   time.Time
}

// NewClock starts the monotonic clock at now and reads the lab offset
// file ClockOffsetEnv names, if any.
func NewClock() *Clock { return &Clock{path: os.Getenv(ClockOffsetEnv), origin: time.Now()} }

// Started is the wall time the clock was made at, unshifted.
func (c *Clock) Started() time.Time { return c.origin }

// Synced says whether the wall clock can be trusted: the kernel says NTP
// disciplines it, or assume (the config's assume_clock_synced, for an RTC
// or GPS the kernel does not know of) says so; never while the lab offset
// file says unsynced.
func (c *Clock) Synced(assume bool) bool {
	if c.labUnsynced() {
		return false
	}
	return assume || kernelClockSynced()
}

// Now reads both clocks.
func (c *Clock) Now() hearth.Instant { return c.At(time.Now()) }

// Wall reads the wall clock.
func (c *Clock) Wall() time.Time { return c.Now().Wall }

// Since is the monotonic time since the agent started.
func (c *Clock) Since() time.Duration { return time.Since(c.origin) }

// At returns both clocks' readings at t, a time taken from time.Now.
func (c *Clock) At(t time.Time) hearth.Instant {
	return hearth.Instant{Wall: c.shift(t).Round(0), Mono: t.Sub(c.origin)}
}

// shift applies the current offset to t's wall reading.
func (c *Clock) shift(t time.Time) time.Time {
	if c.path == "" {
		return t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readLocked()
	return t.Add(c.offset)
}

// labUnsynced reports whether the offset file says the wall clock is not
// synchronised.
func (c *Clock) labUnsynced() bool {
	if c.path == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readLocked()
	return c.unsynced
}

// readLocked reads the offset file at most once a second.
func (c *Clock) readLocked() {
	if time.Since(c.readAt) < time.Second {
		return
	}
	c.readAt = time.Now()
	b, err := os.ReadFile(c.path)
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	if d, err := time.ParseDuration(f[0]); err == nil {
		c.offset = d
		c.unsynced = len(f) > 1 && f[1] == "unsynced"
	}
}
