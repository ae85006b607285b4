package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// StateUplink is what the state publisher needs of the MQTT session.
type StateUplink interface {
	Connected() bool
	// Connects counts the connections made so far: a new one gets the
	// state again, even unchanged.
	Connects() uint64
	PublishState(ctx context.Context, st hearth.State) error
}

// StatePublisher publishes the controller's state, retained, after every
// change and every reconnect. A publish that fails is retried every second
// until one succeeds; only the newest state is ever sent.
type StatePublisher struct {
	up    StateUplink
	state func() hearth.State
	log   *slog.Logger
	dirty chan struct{}
	final chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewStatePublisher publishes what state returns over up.
func NewStatePublisher(up StateUplink, state func() hearth.State, log *slog.Logger) *StatePublisher {
	return &StatePublisher{up: up, state: state, log: discard(log), dirty: make(chan struct{}, 1), final: make(chan struct{})}
}

// Changed marks the state as needing a publish. It never blocks.
func (p *StatePublisher) Changed() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

// Start publishes on a goroutine of its own until Close.
func (p *StatePublisher) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Go(func() { p.run(ctx) })
}

// Close publishes the state once more (the last one: devices handed back),
// gives up at deadline, and returns when the publisher has stopped.
func (p *StatePublisher) Close(deadline time.Time) {
	stop := time.AfterFunc(time.Until(deadline), p.cancel)
	close(p.final)
	p.wg.Wait()
	stop.Stop()
	p.cancel()
}

func (p *StatePublisher) run(ctx context.Context) {
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	dirty := false
	var last hearth.State // published on connection conn
	var conn uint64
	for {
		final := false
		select {
		case <-ctx.Done():
			return
		case <-p.dirty:
			dirty = true
		case <-retry.C:
		case <-p.final:
			final = true
			dirty = true
		}
		if dirty && p.up.Connected() {
			st, c := p.state(), p.up.Connects()
			if c == conn && st.Same(last) {
				dirty = false // already published on this connection
			} else {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := p.up.PublishState(pctx, st)
				cancel()
				if err == nil {
					dirty, last, conn = false, st, c
				} else {
					p.log.Debug("publish state", "err", err)
				}
			}
		}
		if final {
			return
		}
	}
}
