package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// Device is a device the poller reads: SunSpec devices (map discovered)
// and profile devices (fixed register map) alike.
type Device interface {
	Name() string
	// Poll reads the device once. When it cannot be read, the points it
	// would have given carry a quality saying why, and the error is
	// returned too.
	Poll(ctx context.Context, now func() time.Time) (hearth.Reading, error)
}

// PollerOptions configures a Poller.
type PollerOptions struct {
	Device   Device
	Interval time.Duration
	Clock    Clock
	// Out takes every reading, in order; it may block (the writer applies
	// back-pressure), and is abandoned when the poller closes.
	Out func(ctx context.Context, r hearth.Reading) error
	// Observe sees every reading first (the control loop); it must not
	// block.
	Observe func(hearth.Reading)
	// Identified is called once, after the first good poll: the device
	// has said who it is.
	Identified func()
	Record     Recorder // device_down and device_up events
	// Cause classifies a poll's error for the device_down event (a code
	// such as no_reply or connection_refused); nil leaves it out.
	Cause  func(error) string
	Logger *slog.Logger
}

// DeviceStats is what the poller knows of its device's health.
type DeviceStats struct {
	Last      hearth.Reading // the latest reading; zero before the first poll
	LastErr   error          // the latest poll's error; nil when it answered
	LastOK    time.Time      // when it last answered
	DownSince time.Time      // when it stopped answering, while LastErr is set
	PollTime  time.Duration  // how long the latest poll took
	Polls     uint64
	Failures  uint64
}

// Poller reads one device at its poll interval. A device that fails is
// reported on each state change and retried at the same interval; its
// failure never holds up another device's poller.
type Poller struct {
	opt PollerOptions
	log *slog.Logger

	mu    sync.Mutex
	stats DeviceStats

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewPoller returns a poller; it reads nothing until Start.
func NewPoller(opt PollerOptions) *Poller {
	return &Poller{opt: opt, log: discard(opt.Logger)}
}

// Name is the device's name.
func (p *Poller) Name() string { return p.opt.Device.Name() }

// Stats returns the device's health as of the latest poll.
func (p *Poller) Stats() DeviceStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Start polls on a goroutine of its own until Close.
func (p *Poller) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Go(func() { p.run(ctx) })
}

// Close stops polling and waits for a poll in flight to be abandoned.
func (p *Poller) Close() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
}

func (p *Poller) run(ctx context.Context) {
	t := time.NewTicker(p.opt.Interval)
	defer t.Stop()
	name := p.opt.Device.Name()
	identified := false
	for {
		began := time.Now()
		r, err := p.opt.Device.Poll(ctx, p.opt.Clock.Now)
		if ctx.Err() != nil {
			return
		}
		took := time.Since(began)
		r.Boot = p.opt.Clock.Boot
		r.MonoMS = p.opt.Clock.Mono().Milliseconds()
		r.Clock = p.opt.Clock.State()
		r.Time = r.Time.UTC()
		p.mu.Lock()
		s := &p.stats
		prevErr := s.LastErr
		s.Last, s.LastErr, s.PollTime = r, err, took
		s.Polls++
		if err != nil {
			s.Failures++
			if prevErr == nil {
				s.DownSince = began
			}
		} else {
			s.LastOK = r.Time
		}
		p.mu.Unlock()
		if p.opt.Observe != nil {
			p.opt.Observe(r)
		}
		switch {
		case err != nil && prevErr == nil:
			p.log.Warn("device not answering", "device", name, "err", err)
			data := map[string]any{"device": name, "error": err.Error()}
			if p.opt.Cause != nil {
				if c := p.opt.Cause(err); c != "" {
					data["cause"] = c
				}
			}
			p.opt.Record(string(hearth.EventDeviceDown), data)
		case err == nil && prevErr != nil:
			p.log.Info("device answering again", "device", name)
			p.opt.Record(string(hearth.EventDeviceUp), map[string]any{"device": name})
		}
		if err == nil && !identified {
			identified = true
			if p.opt.Identified != nil {
				p.opt.Identified()
			}
		}
		if p.opt.Out(ctx, r) != nil {
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}
