// Package agent wires hearth together: it loads and validates the config,
// owns the device pollers, the group-committing buffer writer and the
// delivery loop, and shuts all of them down in order. It is the only
// package that knows the concrete drivers, buffer and uplink types.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/uplink"
)

// Tuning that the config does not expose.
const (
	liveBatch     = 100             // readings a live telemetry message carries at most
	backfillBatch = 200             // readings a backfill message carries at most
	liveMaxAge    = 2 * time.Second // older undelivered readings go on backfill
	commitEvery   = 500 * time.Millisecond
	// A reading not confirmed live within storeAfter is stored; one that
	// is never touches the disk. While the uplink is down, readings are
	// stored at once, every poll cycle.
	storeAfter    = 5 * time.Second
	seqBlock      = 1024            // seqs reserved per write of the high-water mark
	freshMax      = 4096            // readings kept in memory while storing them fails
	shutdownGrace = 4 * time.Second // SIGTERM to exit stays under 5 s
	birthRefresh  = 15 * time.Minute
)

// Agent is one running gateway agent.
type Agent struct {
	cfg   *Config
	log   *slog.Logger
	boot  string
	start time.Time  // carries the monotonic reading for mono_ms
	clock *wallClock // wall time for readings, leases and events

	store   *buffer.Store
	up      *uplink.Session
	buses   []*drivers.Bus
	devices []*device

	readings chan hearth.Reading
	wake     chan struct{}
	// fresh holds the newest readings, with seqs, until they are confirmed
	// live or stored; the writer fills it, the deliverer drains it.
	fresh *freshQueue
	// stateDirty is signalled on every change of lease, mode or safety
	// state; stateFinal is closed at shutdown for one last publish.
	stateDirty chan struct{}
	stateFinal chan struct{}

	logLevel    *slog.LevelVar
	events      *eventLog
	stateSource func() hearth.State // the controller's state, once there is one
	ctl         *Controller         // the control loop: safety and device writes
	// override and clearOverride start and end a local lease for field
	// work (hearth mode set/clear); nil when nothing is controlled.
	override      func(hearth.Mode, time.Duration) (hearth.Ack, error)
	clearOverride func()

	mu              sync.Mutex
	uplinkDownSince time.Time
	draining        chan struct{} // closed at shutdown: deliver once more, then return
}

// poller is what the agent needs of a device it reads: SunSpec devices
// (map discovered) and profile devices (fixed register map) alike.
type poller interface {
	Name() string
	// Poll reads the device once. When it cannot be read, the points it
	// would have given carry a quality saying why, and the error is
	// returned too.
	Poll(ctx context.Context, now func() time.Time) (hearth.Reading, error)
	Identity() drivers.Identity
}

var (
	_ poller = (*drivers.SunSpecDevice)(nil)
	_ poller = (*drivers.ProfileDevice)(nil)
)

type device struct {
	cfg DeviceConfig
	drv poller
	// sunspec is the device when it speaks SunSpec, the only kind with
	// storage controls (model 124); nil for profile devices.
	sunspec *drivers.SunSpecDevice
	bus     *drivers.Bus // the device's link, shared with its neighbours
	profile string       // the profile's name

	mu        sync.Mutex
	last      hearth.Reading
	lastErr   error
	lastOK    time.Time
	downSince time.Time
	pollTime  time.Duration
	polls     uint64
	failures  uint64
}

// New builds an agent from a validated config. It opens the buffer and
// prepares devices and the uplink but starts nothing and dials nothing.
func New(cfg *Config, log *slog.Logger) (*Agent, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	boot := make([]byte, 8)
	rand.Read(boot)
	a := &Agent{
		cfg:        cfg,
		log:        log,
		boot:       hex.EncodeToString(boot),
		start:      time.Now(),
		clock:      newWallClock(),
		readings:   make(chan hearth.Reading, 64),
		wake:       make(chan struct{}, 1),
		fresh:      &freshQueue{},
		stateDirty: make(chan struct{}, 1),
		stateFinal: make(chan struct{}),
		logLevel:   new(slog.LevelVar),
		events:     &eventLog{},
		draining:   make(chan struct{}),
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	store, err := buffer.Open(filepath.Join(cfg.DataDir, "hearth.db"), buffer.Options{
		Logger:   log.With("component", "buffer"),
		MaxBytes: int64(cfg.Buffer.MaxBytes),
		Now:      a.clock.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	a.store = store

	// One bus per physical link, shared by every device on it; the link
	// keeps the largest gap any of its devices asks for, and each device
	// keeps its own timeout and retries.
	buses := map[string]*drivers.Bus{}
	gaps := map[string]time.Duration{}
	for _, dc := range cfg.Devices {
		key := dc.Transport + " " + dc.Address
		gaps[key] = max(gaps[key], dc.InterRequestGap.D())
	}
	for _, dc := range cfg.Devices {
		key := dc.Transport + " " + dc.Address
		bus, ok := buses[key]
		if !ok {
			bus, err = drivers.OpenBus(drivers.LinkConfig{
				Transport:  dc.Transport,
				Address:    dc.Address,
				Baud:       dc.Baud,
				Parity:     dc.Parity,
				StopBits:   dc.StopBits,
				Timeout:    dc.Timeout.D(),
				Gap:        gaps[key],
				Retries:    dc.Retries,
				MaxBackoff: dc.MaxBackoff.D(),
				Logger:     log.With("link", dc.Address),
			})
			if err != nil {
				a.closeAll()
				return nil, fmt.Errorf("device %s: %w", dc.Name, err)
			}
			buses[key] = bus
			a.buses = append(a.buses, bus)
		}
		bus.ConfigureUnit(uint8(dc.UnitID), drivers.UnitConfig{Timeout: dc.Timeout.D(), Retries: dc.Retries})
		d, err := newDevice(dc, bus)
		if err != nil {
			a.closeAll()
			return nil, fmt.Errorf("device %s: %w", dc.Name, err)
		}
		a.devices = append(a.devices, d)
	}

	password := ""
	if cfg.Uplink.PasswordFile != "" {
		b, err := os.ReadFile(cfg.Uplink.PasswordFile)
		if err != nil {
			a.closeAll()
			return nil, fmt.Errorf("read uplink.password_file: %w", err)
		}
		password = string(trimNewline(b))
	}
	clientID := cfg.Uplink.ClientID
	if clientID == "" {
		clientID = "hearth-" + cfg.GatewayID
	}
	up, err := uplink.New(uplink.Config{
		Broker:       cfg.Uplink.Broker,
		ClientID:     clientID,
		GatewayID:    cfg.GatewayID,
		TopicPrefix:  cfg.Uplink.TopicPrefix,
		Username:     cfg.Uplink.Username,
		Password:     password,
		CAFile:       cfg.Uplink.CAFile,
		CertFile:     cfg.Uplink.CertFile,
		KeyFile:      cfg.Uplink.KeyFile,
		BootDelayMax: cfg.Uplink.BootDelay.D(),
		Logger:       log.With("component", "uplink"),
	})
	if err != nil {
		a.closeAll()
		return nil, fmt.Errorf("uplink: %w", err)
	}
	a.up = up
	a.up.SetBirth(a.birth())
	if err := a.newControl(); err != nil {
		a.closeAll()
		return nil, fmt.Errorf("control: %w", err)
	}
	keys, err := uplink.SetpointKeys(cfg.Uplink.SetpointKeys)
	if err != nil {
		a.closeAll()
		return nil, fmt.Errorf("uplink.setpoint_keys: %w", err)
	}
	// Every setpoint message, including those a broker delivers late after a
	// reconnect, is parsed and checked by uplink, then validated and
	// clamped by the controller, and acked with the outcome.
	a.up.HandleSetpoints(keys, func(sp hearth.Setpoint, received time.Time) hearth.Ack {
		return a.ctl.Submit(sp, a.clock.shift(received))
	})
	a.ctl.OnState(func(hearth.State) { a.stateChanged() })
	return a, nil
}

// newDevice builds the driver for a device from its profile: discovery
// profiles give a SunSpec device, the others a profile device read through
// the planner.
func newDevice(dc DeviceConfig, bus *drivers.Bus) (*device, error) {
	p := dc.RegisterMap()
	if p == nil {
		// A config built in code rather than parsed: built-in profiles only.
		name := dc.Profile
		if name == "" {
			name = "sunspec"
		}
		var err error
		if p, err = drivers.EmbeddedProfile(name); err != nil {
			return nil, err
		}
	}
	d := &device{cfg: dc, bus: bus, profile: p.Name}
	unit := uint8(dc.UnitID)
	if p.Discovery == "sunspec" {
		d.sunspec = drivers.NewSunSpecDevice(dc.Name, bus, unit)
		d.drv = d.sunspec
	} else {
		d.drv = drivers.NewProfileDevice(dc.Name, bus, unit, p)
	}
	return d, nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func (a *Agent) birth() uplink.Birth {
	b := uplink.Birth{Version: hearth.Version, Profile: a.profiles(), Limits: map[string]any{
		"soc_min_pct":     a.cfg.Safety.SocMinPct,
		"soc_max_pct":     a.cfg.Safety.SocMaxPct,
		"max_charge_w":    a.cfg.Safety.MaxChargeW,
		"max_discharge_w": a.cfg.Safety.MaxDischargeW,
	}}
	if st, err := a.store.Stats(); err == nil {
		b.Buffer = map[string]any{
			"pending_readings": st.PendingReadings, "write_bytes": st.WriteBytes,
			"commits_per_hour": st.CommitsPerHour, "compactions": st.Compactions,
			"readings_dropped": st.ReadingsDropped, "disk_full": st.DiskFull,
		}
	}
	for _, d := range a.devices {
		id := d.drv.Identity()
		b.Devices = append(b.Devices, uplink.DeviceInfo{
			Name: d.cfg.Name, Manufacturer: id.Manufacturer, Model: id.Model, Serial: id.Serial, Firmware: id.Firmware,
		})
	}
	return b
}

// profiles names the register maps the devices are read with, in device
// order without repeats, comma-separated.
func (a *Agent) profiles() string {
	var names []string
	for _, d := range a.devices {
		if !slices.Contains(names, d.profile) {
			names = append(names, d.profile)
		}
	}
	return strings.Join(names, ",")
}

// Run polls, buffers and delivers until ctx is cancelled, then flushes what
// it has to disk, makes one short last delivery attempt, publishes the
// offline status and returns, all within about five seconds.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("hearth starting", "version", hearth.Version, "gateway", a.cfg.GatewayID, "boot", a.boot, "devices", len(a.devices))
	upCtx, upCancel := context.WithCancel(context.Background())
	a.up.Start(upCtx)

	a.mu.Lock()
	a.uplinkDownSince = time.Now()
	a.mu.Unlock()
	// Diagnostics are for people; a failure to serve them never stops
	// the agent from keeping the battery safe.
	stopDiag, err := a.serveDiag(ctx)
	if err != nil {
		a.log.Error("diagnostics API unavailable", "err", err)
		stopDiag = func() {}
	}
	stopMetrics, err := a.serveMetrics()
	if err != nil {
		a.log.Error("metrics unavailable", "err", err)
		stopMetrics = func() {}
	}
	watchCtx, watchCancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		a.watchUplink(watchCtx)
	}()

	pollCtx, pollCancel := context.WithCancel(ctx)
	var polls sync.WaitGroup
	for _, d := range a.devices {
		polls.Add(1)
		go func() {
			defer polls.Done()
			a.pollLoop(pollCtx, d)
		}()
	}
	stopControl := a.startControl(ctx)
	stateCtx, stateCancel := context.WithCancel(context.Background())
	stateDone := make(chan struct{})
	go func() {
		defer close(stateDone)
		a.stateLoop(stateCtx)
	}()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		a.writeLoop()
	}()
	deliverCtx, deliverCancel := context.WithCancel(context.Background())
	deliverDone := make(chan struct{})
	go func() {
		defer close(deliverDone)
		a.deliverLoop(deliverCtx)
	}()

	<-ctx.Done()
	a.log.Info("hearth stopping")
	deadline := time.Now().Add(shutdownGrace)
	pollCancel()
	polls.Wait()
	stopControl()
	// The last state (devices handed back) goes out before the session ends.
	a.stateChanged()
	time.AfterFunc(time.Until(deadline)-1500*time.Millisecond, stateCancel)
	close(a.stateFinal)
	<-stateDone
	stateCancel()
	close(a.readings) // the writer commits what is left and returns
	<-writerDone
	// One last chance for what was just committed, bounded by the grace.
	close(a.draining)
	stopDeliver := time.AfterFunc(time.Until(deadline)-time.Second, deliverCancel)
	<-deliverDone
	stopDeliver.Stop()
	deliverCancel()
	closeCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := a.up.Close(closeCtx); err != nil {
		a.log.Warn("uplink close", "err", err)
	}
	upCancel()
	watchCancel()
	<-watchDone
	stopDiag()
	stopMetrics()
	a.closeAll()
	a.log.Info("hearth stopped")
	return nil
}

// watchUplink turns the session's connection state into events and the
// down-since time the status report shows.
func (a *Agent) watchUplink(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	// The status record carries the buffer's wear; refresh it now and then.
	refresh := time.NewTicker(birthRefresh)
	defer refresh.Stop()
	was := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			a.up.SetBirth(a.birth())
			continue
		case <-t.C:
		}
		st := a.up.Stats()
		if st.Connected == was {
			continue
		}
		was = st.Connected
		if st.Connected {
			a.recordEvent("uplink_connected", map[string]any{"broker": a.cfg.Uplink.Broker})
			a.stateChanged()
			continue
		}
		a.mu.Lock()
		a.uplinkDownSince = time.Now()
		a.mu.Unlock()
		a.recordEvent("uplink_lost", map[string]any{"broker": a.cfg.Uplink.Broker, "error": st.LastError})
	}
}

// UseLogLevel makes lv the level the diagnostics API reads and changes; it
// should be the level of the logger the agent was given.
func (a *Agent) UseLogLevel(lv *slog.LevelVar) { a.logLevel = lv }

func (a *Agent) closeAll() {
	for _, b := range a.buses {
		b.Close()
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.Error("close buffer", "err", err)
		}
	}
}

func (a *Agent) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// clockState says whether readings can trust the wall clock.
func (a *Agent) clockState() hearth.ClockState {
	if a.cfg.AssumeClockSynced || kernelClockSynced() {
		return hearth.ClockSynced
	}
	return hearth.ClockUnsynced
}

// pollLoop reads one device at its poll interval. A device that fails is
// reported on each state change, and is retried at the same interval; its
// failure never holds up another device's loop.
func (a *Agent) pollLoop(ctx context.Context, d *device) {
	t := time.NewTicker(d.cfg.PollInterval.D())
	defer t.Stop()
	identified := false
	for {
		began := time.Now()
		r, err := d.drv.Poll(ctx, a.clock.Now)
		if ctx.Err() != nil {
			return
		}
		took := time.Since(began)
		r.Boot = a.boot
		r.MonoMS = time.Since(a.start).Milliseconds()
		r.Clock = a.clockState()
		r.Time = r.Time.UTC()
		d.mu.Lock()
		prevErr := d.lastErr
		d.last, d.lastErr, d.pollTime = r, err, took
		d.polls++
		if err != nil {
			d.failures++
			if prevErr == nil {
				d.downSince = began
			}
		} else {
			d.lastOK = r.Time
		}
		d.mu.Unlock()
		a.ctl.Observe(r)
		switch {
		case err != nil && prevErr == nil:
			a.log.Warn("device not answering", "device", d.cfg.Name, "err", err)
			a.recordEvent("device_down", map[string]any{"device": d.cfg.Name, "error": err.Error()})
		case err == nil && prevErr != nil:
			a.log.Info("device answering again", "device", d.cfg.Name)
			a.recordEvent("device_up", map[string]any{"device": d.cfg.Name})
		}
		if err == nil && !identified {
			identified = true
			id := d.drv.Identity()
			a.log.Info("device identified", "device", d.cfg.Name, "manufacturer", id.Manufacturer, "model", id.Model, "serial", id.Serial)
			a.up.SetBirth(a.birth())
		}
		select {
		case a.readings <- r:
		case <-ctx.Done():
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// writeLoop gives readings their seqs, one poll cycle at a time (when every
// device has reported, or every commitEvery), and hands them to the
// deliverer in memory at once. It stores in one transaction the readings
// that were not confirmed live within storeAfter, and, while the uplink is
// down, all of them every cycle, as it does at shutdown. Seqs come from
// blocks reserved in the buffer, so a healthy uplink costs one small write
// per seqBlock readings instead of two commits per cycle.
func (a *Agent) writeLoop() {
	var (
		batch      []hearth.Reading
		next, last uint64 // reserved seqs not yet used: next..last
		used       uint64 // the last seq given to a reading
		diskFull   bool
		restampDue bool // readings were stored since the last restamp
		dropped    bool // readings with seqs were lost without a gap event
	)
	t := time.NewTicker(commitEvery)
	defer t.Stop()
	noteDiskFull := func(err error) {
		// Control goes on; the buffer counts what it refused and
		// reports the range as a gap once there is room again.
		if !diskFull {
			a.log.Error("disk full: readings are not buffered until space returns", "err", err)
			a.recordEvent("disk_full", map[string]any{"error": err.Error()})
		}
		diskFull = true
	}
	// write stores rs and says whether the queue may forget them. Readings
	// refused for a full disk are counted by the buffer and reported as a
	// gap; on another failure they stay queued and are retried, up to
	// freshMax queued, beyond which they are dropped, and the seqs not
	// released at shutdown, so the next start reports them as not stored.
	write := func(rs []hearth.Reading) bool {
		_, err := a.store.AppendWithSeq(rs)
		switch {
		case errors.Is(err, buffer.ErrDiskFull):
			noteDiskFull(err)
			return true
		case err != nil:
			a.log.Error("buffer append", "err", err, "readings", len(rs))
			if len(rs) < freshMax {
				return false
			}
			dropped = true
			return true
		default:
			if diskFull {
				a.log.Info("disk space returned: buffering again")
			}
			diskFull = false
			restampDue = true
			return true
		}
	}
	// assign gives the batch seqs and queues it for delivery.
	assign := func() {
		for len(batch) > 0 {
			if next == 0 || next > last {
				first, l, err := a.store.ReserveSeqs(seqBlock)
				if err != nil {
					if errors.Is(err, buffer.ErrDiskFull) {
						noteDiskFull(err)
						a.store.Refuse(batch)
					} else {
						a.log.Error("reserve seqs: readings dropped", "err", err, "readings", len(batch))
					}
					batch = batch[:0]
					return
				}
				next, last = first, l
			}
			n := min(uint64(len(batch)), last-next+1)
			rs := slices.Clone(batch[:n])
			for i := range rs {
				rs[i].Seq = next
				rs[i].Time = rs[i].Time.UTC().Truncate(time.Millisecond)
				next++
			}
			used = rs[len(rs)-1].Seq
			a.fresh.add(rs, time.Since(a.start))
			batch = batch[n:]
		}
		batch = batch[:0]
		a.signal()
	}
	// store writes what must not wait for the uplink any longer.
	store := func(all bool) {
		all = all || !a.up.Connected()
		if a.fresh.store(time.Since(a.start)-storeAfter, all, write) > 0 {
			a.signal()
		}
		// Readings taken before the clock synced get true times.
		if restampDue && a.clockState() == hearth.ClockSynced {
			restampDue = false
			if n, err := a.store.Restamp(a.boot, a.clock.Now(), time.Since(a.start).Milliseconds()); err != nil {
				a.log.Error("restamp readings", "err", err)
			} else if n > 0 {
				a.log.Info("re-stamped readings taken before the clock synced", "readings", n)
			}
		}
	}
	for {
		select {
		case r, ok := <-a.readings:
			if !ok {
				assign()
				store(true)
				// Everything up to used is delivered or stored: the rest
				// of the block is given back, so the next run goes on
				// from used+1 without a gap.
				if used > 0 && a.fresh.len() == 0 && !dropped {
					if err := a.store.ReleaseSeqs(used); err != nil {
						a.log.Warn("release unused seqs; the next start reports them as a gap", "err", err)
					}
				}
				return
			}
			batch = append(batch, r)
			if len(batch) >= len(a.devices) {
				assign()
				store(false)
			}
		case <-t.C:
			assign()
			store(false)
		}
	}
}

// deliverLoop sends readings: fresh ones first on telemetry, from memory
// and from the buffer, then
// the backlog oldest first on telemetry/backfill, a batch at a time so live
// data keeps flowing. A reading leaves the buffer only after its PUBACK.
func (a *Agent) deliverLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for last := false; !last; {
		select {
		case <-ctx.Done():
			return
		case <-a.draining:
			last = true
		case <-a.wake:
		case <-t.C:
		}
		for ctx.Err() == nil && a.up.Connected() {
			sent, err := a.deliverOnce(ctx)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					a.log.Debug("deliver", "err", err)
				}
				break
			}
			if sent == 0 {
				break
			}
		}
	}
}

// deliverOnce publishes one live batch and one backfill batch and returns
// how many readings were delivered.
func (a *Agent) deliverOnce(ctx context.Context) (int, error) {
	// Events are few and matter most (trips, gaps, lease outcomes).
	sent, err := a.deliverEvents(ctx)
	if err != nil {
		return sent, err
	}
	newest, err := a.store.Newest(liveBatch)
	if err != nil {
		return 0, err
	}
	// Age is judged on the monotonic clock, which a wall-clock step cannot move.
	now := time.Since(a.start).Milliseconds()
	var live []hearth.Reading
	for _, r := range newest {
		if r.Boot == a.boot && now-r.MonoMS <= liveMaxAge.Milliseconds() {
			live = append(live, r)
		}
	}
	// Readings still in memory are newer than every stored one.
	live = append(live, a.fresh.live(time.Duration(now)*time.Millisecond-liveMaxAge, liveBatch-len(live))...)
	if len(live) > 0 {
		if err := a.publish(ctx, live, false); err != nil {
			return sent, err
		}
		sent += len(live)
	}
	// Compacted minutes are the oldest backlog there is.
	n, err := a.deliverAggregates(ctx)
	sent += n
	if err != nil || len(newest) == 0 {
		return sent, err
	}
	// The backlog is stored, and older than every reading in memory.
	// The backlog is what is older than the newest batch looked at, so a
	// reading committed meanwhile waits for the next live batch.
	hi := newest[len(newest)-1].Seq
	pending, err := a.store.Pending(backfillBatch)
	if err != nil {
		return sent, err
	}
	var backlog []hearth.Reading
	for _, r := range pending {
		if r.Seq <= hi && (len(live) == 0 || r.Seq < live[0].Seq) {
			backlog = append(backlog, r)
		}
	}
	if len(backlog) > 0 {
		if err := a.publish(ctx, backlog, true); err != nil {
			return sent, err
		}
		sent += len(backlog)
	}
	return sent, nil
}

// publish sends rs and forgets what the broker confirmed: from memory if
// it was never stored, else from the buffer.
func (a *Agent) publish(ctx context.Context, rs []hearth.Reading, backfill bool) error {
	n, err := a.up.PublishTelemetry(ctx, rs, backfill)
	// What the broker confirmed leaves the buffer even when a later part of
	// a split batch failed, so it is not sent twice.
	if n > 0 {
		seqs := make([]uint64, n)
		for i, r := range rs[:n] {
			seqs[i] = r.Seq
		}
		if stored := a.fresh.confirm(seqs); len(stored) > 0 {
			if aerr := a.store.Ack(stored); aerr != nil {
				return aerr
			}
		}
	}
	return err
}
