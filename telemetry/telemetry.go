// Package telemetry is the agent's data path: a poller per device stamps
// each reading; the writer gives readings their seqs, keeps the newest in
// memory (the fresh queue) and stores in the buffer only what the uplink
// has not confirmed in time, or everything while it is down; the deliverer
// sends fresh readings live and the backlog oldest first, and a reading
// leaves the buffer only after the broker's PUBACK. Events take the same
// path, and the state publisher keeps the retained state current.
//
// telemetry imports only the root package. The devices, the buffer and the
// uplink are interfaces defined here; package agent hands it the concrete
// ones. Each loop has an owner that starts it and closes it: Start runs it
// on a goroutine of its own, Close stops it and waits.
package telemetry

import (
	"log/slog"
	"time"

	"github.com/hearth-energy/hearth"
)

// Clock says where and when readings are taken: the boot they belong to,
// the monotonic time their mono_ms counts, the wall clock, and whether the
// wall clock can be trusted.
type Clock struct {
	Boot   string
	Since  func() time.Duration // time since the boot began, on the monotonic clock
	Now    func() time.Time     // the wall clock
	Synced func() bool          // whether the wall clock is synchronised
}

// Mono is the time since the boot began on the monotonic clock, which a
// wall-clock step cannot move.
func (c Clock) Mono() time.Duration { return c.Since() }

// State is the clock state readings are stamped with now.
func (c Clock) State() hearth.ClockState {
	if c.Synced != nil && c.Synced() {
		return hearth.ClockSynced
	}
	return hearth.ClockUnsynced
}

// Recorder records an event for the cloud and the local history. It must
// not block.
type Recorder func(typ string, data map[string]any)

func discard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
