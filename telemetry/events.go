package telemetry

import (
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// maxRecent bounds the in-memory event history the diagnostics API serves.
const maxRecent = 1000

// EventStore is where events wait for delivery: the buffer's outbox.
type EventStore interface {
	AppendEvent(hearth.Event) (hearth.Event, error)
}

// Recent is one event as the local history keeps it.
type Recent struct {
	Time time.Time
	Type string
	Data map[string]any
}

// Events records events for the cloud (the outbox, delivered by the
// deliverer) and for the local history (`hearth events`). Storing can fail
// (disk full); the local history and the log still have the event.
type Events struct {
	store EventStore
	now   func() time.Time
	wake  func()
	log   *slog.Logger

	mu     sync.Mutex
	recent []Recent
}

// NewEvents records into store, stamping events with now and calling wake
// (the deliverer's) after each.
func NewEvents(store EventStore, now func() time.Time, wake func(), log *slog.Logger) *Events {
	return &Events{store: store, now: now, wake: wake, log: discard(log)}
}

// Record records one event. It never blocks on the network.
func (e *Events) Record(typ string, data map[string]any) {
	now := e.now().UTC()
	e.mu.Lock()
	e.recent = append(e.recent, Recent{Time: now, Type: typ, Data: data})
	if over := len(e.recent) - maxRecent; over > 0 {
		e.recent = append(e.recent[:0:0], e.recent[over:]...)
	}
	e.mu.Unlock()
	raw, err := json.Marshal(data)
	if err == nil {
		_, err = e.store.AppendEvent(hearth.Event{Time: now, Type: typ, Data: raw})
	}
	if err != nil {
		e.log.Error("store event", "type", typ, "err", err)
	}
	if e.wake != nil {
		e.wake()
	}
}

// Since returns the recorded events at or after t, of type typ (any when
// empty), oldest first.
func (e *Events) Since(t time.Time, typ string) []Recent {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []Recent{}
	for _, r := range e.recent {
		if !r.Time.Before(t) && (typ == "" || r.Type == typ) {
			out = append(out, r)
		}
	}
	return out
}
