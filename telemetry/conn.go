package telemetry

import (
	"context"
	"sync"
	"time"
)

// ConnWatcherOptions configures a ConnWatcher.
type ConnWatcherOptions struct {
	Record Recorder
	// Connected is called on every (re)connection, after the event.
	Connected func()
	// Refresh is called every RefreshEvery (the birth record carries the
	// buffer's wear); nil: never.
	Refresh      func()
	RefreshEvery time.Duration
}

// linkChange is one connection made or lost, as the session reported it.
type linkChange struct {
	up     bool
	broker string
	err    string
}

// ConnWatcher turns the session's connection changes into uplink_connected
// and uplink_lost events naming the broker node, and keeps since when the
// uplink has been down. The session tells it of each change (Up, Lost) as
// it happens, with the error that ended the connection: nothing is
// polled, so a lost event never carries a later retry's error instead.
type ConnWatcher struct {
	opt ConnWatcherOptions

	mu        sync.Mutex
	downSince time.Time
	queue     []linkChange // told and not yet recorded, oldest first
	wake      chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewConnWatcher returns a watcher; the uplink counts as down from now.
func NewConnWatcher(opt ConnWatcherOptions) *ConnWatcher {
	return &ConnWatcher{opt: opt, downSince: time.Now(), wake: make(chan struct{}, 1)}
}

// DownSince is when the uplink was last lost (or the watcher made), while
// it is down.
func (w *ConnWatcher) DownSince() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.downSince
}

// Up tells the watcher a connection to broker was made. It never blocks:
// the event is recorded on the watcher's goroutine.
func (w *ConnWatcher) Up(broker string) { w.tell(linkChange{up: true, broker: broker}) }

// Lost tells the watcher the connection to broker was lost, and why. It
// never blocks.
func (w *ConnWatcher) Lost(broker, err string) {
	w.mu.Lock()
	w.downSince = time.Now()
	w.mu.Unlock()
	w.tell(linkChange{broker: broker, err: err})
}

func (w *ConnWatcher) tell(ch linkChange) {
	w.mu.Lock()
	w.queue = append(w.queue, ch)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Start records what it is told, and refreshes, on a goroutine of its own
// until Close.
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
	var refresh <-chan time.Time
	if w.opt.Refresh != nil && w.opt.RefreshEvery > 0 {
		r := time.NewTicker(w.opt.RefreshEvery)
		defer r.Stop()
		refresh = r.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh:
			w.opt.Refresh()
			continue
		case <-w.wake:
		}
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, ch := range q {
			if ch.up {
				w.opt.Record("uplink_connected", map[string]any{"broker": ch.broker})
				if w.opt.Connected != nil {
					w.opt.Connected()
				}
				continue
			}
			w.opt.Record("uplink_lost", map[string]any{"broker": ch.broker, "error": ch.err})
		}
	}
}
