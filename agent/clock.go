package agent

import (
	"os"
	"strings"
	"sync"
	"time"
)

// ClockOffsetEnv names a file whose content (a Go duration such as "-1h"
// or "24h") shifts the agent's wall clock. It exists for lab and fault
// scenarios, which must step one agent's clock the way NTP, a flat RTC
// battery or an operator does, without touching the machine's clock. It is
// unset in production, where the agent reads time.Now.
const ClockOffsetEnv = "HEARTH_CLOCK_OFFSET_FILE"

// wallClock is the agent's wall clock. Go's Time.Add moves a time's
// monotonic reading with its wall reading, so a step of the offset is seen
// by durations between readings of this clock too: harsher than a real
// clock step, which the monotonic clock ignores. Durations the agent keeps
// against its start (mono_ms, live age) use time.Now and see no step.
type wallClock struct {
	path string

	mu     sync.Mutex
	offset time.Duration
	readAt time.Time
}

func newWallClock() *wallClock { return &wallClock{path: os.Getenv(ClockOffsetEnv)} }

// Now returns the wall time, shifted when an offset file is set.
func (c *wallClock) Now() time.Time { return c.shift(time.Now()) }

// shift applies the current offset to t, a time taken from time.Now.
func (c *wallClock) shift(t time.Time) time.Time {
	if c.path == "" {
		return t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.readAt) >= time.Second {
		c.readAt = time.Now()
		if b, err := os.ReadFile(c.path); err == nil {
			if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
				c.offset = d
			}
		}
	}
	return t.Add(c.offset)
}
