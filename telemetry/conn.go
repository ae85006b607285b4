package telemetry

import (
	"context"
	"sync"
	"time"
)

// LinkState is what the connection watcher needs of the MQTT session.
type LinkState interface {
	Connected() bool
	// LastError is the last connection error, "" when none.
	LastError() string
}

// ConnWatcherOptions configures a ConnWatcher.
type ConnWatcherOptions struct {
	Link   LinkState
	Broker string // named in the events
	Record Recorder
	// Connected is called on every (re)connection, after the event.
	Connected func()
	// Refresh is called every RefreshEvery (the birth record carries the
	// buffer's wear); nil: never.
	Refresh      func()
	RefreshEvery time.Duration
}

// ConnWatcher turns the session's connection state into uplink_connected
// and uplink_lost events, and keeps since when the uplink has been down.
type ConnWatcher struct {
	opt ConnWatcherOptions

	mu        sync.Mutex
	downSince time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewConnWatcher returns a watcher; the uplink counts as down from now.
func NewConnWatcher(opt ConnWatcherOptions) *ConnWatcher {
	return &ConnWatcher{opt: opt, downSince: time.Now()}
}

// DownSince is when the uplink was last lost (or the watcher made), while
// it is down.
func (w *ConnWatcher) DownSince() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.downSince
}

// Start watches, a few times a second, on a goroutine of its own until
// Close.
func (w *ConnWatcher) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Go(func() { w.run(ctx) })
}

// Close stops watching and waits.
func (w *ConnWatcher) Close() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

func (w *ConnWatcher) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var refresh <-chan time.Time
	if w.opt.Refresh != nil && w.opt.RefreshEvery > 0 {
		r := time.NewTicker(w.opt.RefreshEvery)
		defer r.Stop()
		refresh = r.C
	}
	was := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh:
			w.opt.Refresh()
			continue
		case <-t.C:
		}
		up := w.opt.Link.Connected()
		if up == was {
			continue
		}
		was = up
		if up {
			w.opt.Record("uplink_connected", map[string]any{"broker": w.opt.Broker})
			if w.opt.Connected != nil {
				w.opt.Connected()
			}
			continue
		}
		w.mu.Lock()
		w.downSince = time.Now()
		w.mu.Unlock()
		w.opt.Record("uplink_lost", map[string]any{"broker": w.opt.Broker, "error": w.opt.Link.LastError()})
	}
}
