// Package control runs the control loop: on every reading, lease change
// and tick it evaluates the active setpoint lease (or the fallback) against
// the latest readings and the local limits (package safety), and writes
// one safety.Approved command per controllable device, refreshing it before
// the device's revert timer lapses. It owns the lease state and persists it.
//
// control imports only the root package and safety. The devices it writes
// to, the store it persists in and the event sink are interfaces it
// defines; package agent hands it the concrete ones.
package control

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/safety"
)

// Meta keys of the persisted lease state.
const (
	metaLease    = "safety.lease"
	metaLocal    = "safety.local_lease"
	metaVersion  = "safety.highest_version"
	metaFallback = "safety.fallback"
)

// Device is a controllable device: one that takes approved commands.
type Device interface {
	Name() string
	// Apply writes a and reads it back. A read-back that does not show
	// what was written returns an error wrapping hearth.ErrNotEffective,
	// with the Readback of what was read.
	Apply(ctx context.Context, a safety.Approved) (Readback, error)
	// RevertTimeout is the device's revert timer: a command not refreshed
	// within it lapses, and the device returns to its own logic.
	RevertTimeout() time.Duration
}

// Unguarded is implemented by a device that may have no revert timer of
// its own (Guarded false): nothing on it lapses, so a command it read back
// counts as held until a release is read back, and RevertTimeout is the
// hold bound, the longest the agent leaves it on a command it could not
// refresh before it writes the release itself.
type Unguarded interface {
	Guarded() bool
}

func unguarded(d Device) bool {
	g, ok := d.(Unguarded)
	return ok && !g.Guarded()
}

// Readback is what a device showed after a write.
type Readback struct {
	// HeldW is the power the device's registers say it holds, which may
	// be less than approved (a rate truncated or saturated by its
	// register); nil when the read-back does not say (then the approved
	// power is taken as held).
	HeldW *hearth.Watts
	// Detail is the read-back as the device gives it, for events.
	Detail any
}

// Store persists the lease state: a key-value table that survives a
// restart.
type Store interface {
	Meta(key string) (value string, ok bool, err error)
	SetMeta(key, value string) error
}

// Options configures a Controller.
type Options struct {
	Limits  safety.Limits
	Store   Store
	Devices []Device
	// MeterDevice names the device whose MeterPoint is the site's grid
	// power, positive exporting; empty when there is no meter.
	MeterDevice, MeterPoint string
	// EffectiveWithin is how long a device may take to follow a command
	// before a not_effective event.
	EffectiveWithin time.Duration
	// Clock reads the gateway's clocks and makes the loop's ticker; nil:
	// Now with the runtime's timers.
	Clock hearth.Clock
	// Now reads the gateway's clocks when Clock is nil; nil: the real
	// ones, the monotonic one counted from New.
	Now func() hearth.Instant
	// Synced says whether the wall clock can be trusted now; nil: always.
	Synced func() bool
	// BuildTime is when the binary's sources were made: true time is never
	// earlier, which puts a floor under a clock that boots at 1970.
	BuildTime time.Time
	// LocalMaxW bounds the power a local override may ask for (hearth
	// mode set power): enough to check sign and wiring, no more; default
	// 1000 W. The safety limits apply on top.
	LocalMaxW hearth.Watts
	// Revoked are the setpoint key ids revoked (uplink.revoked_keys) when
	// the controller is built: a persisted cloud lease signed with one is
	// not resumed but ended (reason key_revoked), as Revoke ends one at a
	// reload.
	Revoked []string
	// Event records an event (required); it must not block.
	Event  func(typ string, data map[string]any)
	Logger *slog.Logger
}

// Controller runs the control loop: on every reading, lease change and
// tick it evaluates the active lease (or the fallback) against the latest
// readings and the limits, and writes one approved command per device.
// It owns the lease state and persists it in the buffer's meta table.
// Its methods are safe for concurrent use.
type Controller struct {
	opt  Options
	log  *slog.Logger
	kick chan struct{}

	mu       sync.Mutex
	eval     *safety.Evaluator
	cloud    *safety.Lease
	local    *safety.Lease
	fallback hearth.Mode
	highest  uint64
	estop    bool
	obs      map[string]safety.Observation
	grid     *safety.GridSample
	dev      map[string]*ctlDevice
	trips    map[tripKey]string // tripped, with the detail
	rule     hearth.Rule
	// importSince is the meter sample at which import_limit_w began to
	// bind, until a later one confirms it.
	importSince time.Time
	state       hearth.State
	onState     []func(hearth.State)
	floor       timeFloor
	lastObs     time.Time // on the monotonic timeline (mono)
	lastStep    time.Time
	// lastSigned is the issued_at of the newest verified signed lease
	// accepted (persisted), and distrusted the floor found far ahead of
	// every other source, if one was.
	lastSigned time.Time
	distrusted time.Time

	applyMu sync.Mutex // one evaluate-and-write at a time

	cancel context.CancelFunc // stops the loop Start runs
	wg     sync.WaitGroup
}

// ctlDevice is what the controller remembers about writing to a device.
type ctlDevice struct {
	st Device
	// written is the last command a write of went through; writtenAt is
	// when that write returned (the device got it no later).
	written   safety.Approved
	writtenAt time.Time
	since     time.Time // when the current command was first written
	failing   bool
	// held is the power the device holds after the last write read back
	// (power mode only; heldOK false after a failed write or in auto).
	held   hearth.Watts
	heldOK bool
	// notEffective says the device does not follow what it holds (by its
	// read-back, or its measured power), and why; events mark the changes.
	notEffective string
	// unguarded: the device has no revert timer (Unguarded).
	// holdReported says the agent has reported that it may still hold
	// its last command (mayHold), unreleased.
	unguarded    bool
	holdReported bool
}

// mayHold returns the power of the last power command the device read
// back, written at writtenAt: until its revert timer lapses it may still
// run it, whatever became of the writes since. ok is false when the last
// write that went through handed it back.
func (d *ctlDevice) mayHold() (w hearth.Watts, ok bool) {
	return d.held, d.written.Mode() == hearth.ModePower
}

// overdue reports whether a device with no revert timer holds a power
// command the agent has not refreshed for its hold bound (RevertTimeout).
func (d *ctlDevice) overdue(now time.Time) bool {
	w, ok := d.mayHold()
	return d.unguarded && ok && w != 0 && now.Sub(d.writtenAt) >= d.st.RevertTimeout()
}

// New builds a controller and restores the persisted lease: an unexpired
// lease received on a synchronised clock is resumed; any other is ended
// with a lease_ended event and never applied. It starts nothing: Start
// runs the loop.
func New(opt Options) (*Controller, error) {
	if opt.Store == nil || opt.Event == nil {
		return nil, errors.New("control: Store and Event are required")
	}
	switch {
	case opt.Clock != nil:
		opt.Now = opt.Clock.Now
	case opt.Now != nil:
		opt.Clock = hearth.NowFunc(opt.Now)
	default:
		opt.Clock = hearth.SystemClock()
		opt.Now = opt.Clock.Now
	}
	if opt.LocalMaxW <= 0 {
		opt.LocalMaxW = DefaultLocalMaxW
	}
	if opt.Synced == nil {
		opt.Synced = func() bool { return true }
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.EffectiveWithin <= 0 {
		opt.EffectiveWithin = 10 * time.Second
	}
	eval, err := safety.NewEvaluator(opt.Limits)
	if err != nil {
		return nil, fmt.Errorf("safety limits: %w", err)
	}
	c := &Controller{
		opt: opt, log: opt.Logger, kick: make(chan struct{}, 1), eval: eval,
		fallback: opt.Limits.Fallback, obs: map[string]safety.Observation{}, dev: map[string]*ctlDevice{},
	}
	for _, d := range opt.Devices {
		c.dev[d.Name()] = &ctlDevice{st: d, unguarded: unguarded(d)}
	}
	if err := c.restore(); err != nil {
		return nil, err
	}
	c.state = c.stateLocked(opt.Now(), safety.Decision{})
	return c, nil
}

// DefaultLocalMaxW bounds a local power override when Options does not.
const DefaultLocalMaxW = 1000

// monoEpoch is the origin of the monotonic timeline the controller keeps
// its own times on and hands the evaluator, which only takes differences:
// a step of the wall clock moves none of them.
var monoEpoch = time.Unix(1<<31, 0).UTC()

func mono(i hearth.Instant) time.Time { return monoEpoch.Add(i.Mono) }

func (c *Controller) restore() error {
	st := c.opt.Store
	now, synced := c.opt.Now(), c.opt.Synced()
	if v, ok, err := st.Meta(metaVersion); err != nil {
		return err
	} else if ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("persisted %s %q: %w", metaVersion, v, err)
		}
		c.highest = n
	}
	if v, ok, err := st.Meta(metaFallback); err != nil {
		return err
	} else if ok && v != "" {
		c.fallback = hearth.Mode(v)
	}
	if err := c.restoreFloorLocked(now, synced); err != nil {
		return err
	}
	floor := c.floor.now(now)
	for _, key := range []string{metaLease, metaLocal} {
		v, ok, err := st.Meta(key)
		if err != nil {
			return err
		}
		if !ok || v == "" {
			continue
		}
		var l safety.Lease
		if err := json.Unmarshal([]byte(v), &l); err != nil {
			c.log.Warn("persisted lease unreadable, not resumed", "key", key, "err", err)
			c.persist(key, nil)
			continue
		}
		if key == metaLease && l.Setpoint.KeyID != "" && slices.Contains(c.opt.Revoked, l.Setpoint.KeyID) {
			// Revoked while the agent was down: as at a reload.
			c.setFallback(l.Setpoint.Fallback)
			c.endLocked(&l, "key_revoked", nil)
			c.persist(key, nil)
			continue
		}
		lf := floor
		if l.Source == safety.SourceLocal {
			lf = time.Time{} // a local lease runs on the monotonic clock alone
		}
		if reason := l.Resume(now, synced, lf); reason != "" {
			// How long the agent was down cannot be known, or the lease
			// is over: it ends, and its fallback is what runs.
			if key == metaLease {
				c.setFallback(l.Setpoint.Fallback)
			}
			c.endLocked(&l, reason, nil)
			c.persist(key, nil)
			continue
		}
		lease := l
		if key == metaLease {
			c.cloud = &lease
		} else {
			c.local = &lease
		}
		left := lease.Left(now, synced, lf)
		c.event(hearth.EventLeaseStarted, leaseData(&lease, map[string]any{"resumed": true, "remaining_s": math.Round(left.Seconds()*10) / 10}))
	}
	return nil
}

// OnState registers fn to be called with the new state after every change
// of lease, mode, applied power or safety state. fn runs on the control
// goroutine and must not block; register before Run.
func (c *Controller) OnState(fn func(hearth.State)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onState = append(c.onState, fn)
}

// Devices names the devices the controller writes to, in config order.
func (c *Controller) Devices() []string {
	names := make([]string, len(c.opt.Devices))
	for i, d := range c.opt.Devices {
		names[i] = d.Name()
	}
	return names
}

// Held returns the power each device holds in power mode, by its
// read-back, by device name; a device in auto, or whose write failed, is
// absent. The values sum to State's AppliedW.
func (c *Controller) Held() map[string]hearth.Watts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]hearth.Watts{}
	for name, d := range c.dev {
		if d.heldOK && d.written.Mode() == hearth.ModePower {
			out[name] = roundW(d.held)
		}
	}
	return out
}

// State returns what the controller is doing, as of its last step, with
// the time the lease has left as of now.
func (c *Controller) State() hearth.State {
	now := c.opt.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state
	if l := c.activeLocked(); l != nil && st.Lease != nil && st.Lease.ID == l.Setpoint.ID {
		info := l.Info(now, c.opt.Synced(), c.leaseFloorLocked(l, now))
		st.Lease, st.Time = &info, now.Wall.UTC()
	}
	return st
}

// Lease returns the lease being executed, if any: the local override when
// there is one, else the cloud lease.
func (c *Controller) Lease() (safety.Lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.activeLocked(); l != nil {
		return *l, true
	}
	return safety.Lease{}, false
}

// Observe hands the controller a new reading and wakes the loop. Readings
// of controllable devices feed the rules; the meter device's reading gives
// the grid power.
func (c *Controller) Observe(r hearth.Reading) {
	now := mono(c.opt.Now())
	c.mu.Lock()
	c.lastObs = now
	if _, ok := c.dev[r.Device]; ok {
		c.obs[r.Device] = safety.Observation{Reading: r, At: now}
	}
	if r.Device == c.opt.MeterDevice && c.opt.MeterDevice != "" {
		p := r.Points[c.opt.MeterPoint]
		c.grid = &safety.GridSample{W: hearth.Watts(p.Value), Quality: p.Quality, At: now}
		if _, ok := r.Points[c.opt.MeterPoint]; !ok {
			c.grid.Quality = hearth.QualityNotImplemented
		}
	}
	c.mu.Unlock()
	c.wake()
}

// SetEStop engages or releases the emergency stop. Engaged, every device
// is held at 0 W and cloud setpoints are rejected.
func (c *Controller) SetEStop(on bool) {
	c.mu.Lock()
	c.estop = on
	c.mu.Unlock()
	c.wake()
}

func (c *Controller) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Start runs the loop (Run) on a goroutine of its own until Close.
func (c *Controller) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Go(func() { c.Run(ctx) })
}

// Close stops the loop Start runs, waits for it, and hands every device
// back to its own logic, spending at most a second on it.
func (c *Controller) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Release(ctx)
	c.mu.Lock()
	c.persistFloorLocked(c.opt.Now())
	c.mu.Unlock()
}

// Run steps the loop on every wake-up (reading, lease, e-stop) and at
// least every tick, until ctx ends. The tick is a sixth of the shortest
// revert timer, at most a second, so commands are refreshed well within a
// third of it and leases end on time without readings.
func (c *Controller) Run(ctx context.Context) {
	tick := time.Second
	for _, d := range c.dev {
		tick = min(tick, d.st.RevertTimeout()/6)
	}
	tick = max(tick, 50*time.Millisecond)
	t := c.opt.Clock.NewTicker(tick)
	defer t.Stop()
	for {
		c.Step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C():
		}
	}
}

// Release hands every device back to its own logic, for a clean shutdown.
func (c *Controller) Release(ctx context.Context) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	for name, d := range c.dev {
		if d.written.Valid() && d.written.Mode() == hearth.ModeAuto {
			continue
		}
		if _, err := d.st.Apply(ctx, safety.Release(name)); err != nil {
			c.log.Warn("hand back to device", "device", name, "err", err)
		}
	}
}

// Healthy reports whether readings and control steps have both happened
// within stall of now: the watchdogs are fed only then.
func (c *Controller) Healthy(stall time.Duration) bool {
	now := mono(c.opt.Now())
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.lastObs.IsZero() && now.Sub(c.lastObs) <= stall && now.Sub(c.lastStep) <= stall
}

// Step runs one evaluation and writes what changed or is due for refresh.
func (c *Controller) Step(ctx context.Context) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	inst := c.opt.Now()
	now := mono(inst)

	c.mu.Lock()
	c.lastStep = now
	synced := c.opt.Synced()
	if step := c.floor.observe(inst, synced); step != 0 {
		c.log.Warn("wall clock stepped", "by", step)
		c.event(hearth.EventClockStepped, map[string]any{"by_s": math.Round(step.Seconds()*10) / 10})
	}
	c.checkFloorLocked(inst, synced)
	if c.floor.due(inst) {
		c.persistFloorLocked(inst)
	}
	c.expireLocked(inst, synced)
	tgt := safety.Target{Mode: c.fallback}
	if l := c.activeLocked(); l != nil {
		tgt = l.Target(inst)
	}
	dec := c.eval.Evaluate(c.inputLocked(now, tgt))
	shown := c.judgedLocked(dec)
	c.tripEventsLocked(shown)
	type job struct {
		d *ctlDevice
		a safety.Approved
	}
	var jobs []job
	for _, a := range dec.Commands {
		d := c.dev[a.Device()]
		if d.overdue(now) && a.Mode() != hearth.ModeAuto {
			// No timeout on the device, and its command could not be
			// refreshed for the hold bound: release it as soon as a
			// write goes through.
			a = safety.Release(a.Device())
		}
		refresh := a.Mode() == hearth.ModePower && now.Sub(d.writtenAt) >= d.st.RevertTimeout()/3
		if d.failing || !d.written.Valid() || !d.written.Equal(a) || refresh {
			jobs = append(jobs, job{d, a})
		}
		c.checkFollowLocked(d, a, now)
	}
	c.mu.Unlock()

	// Device I/O happens without the lock, so Submit and State never wait
	// on Modbus.
	type result struct {
		j   job
		st  Readback
		err error
		// done is when Apply returned: the device got the write no
		// later, and its revert timer runs from when it got it.
		done time.Time
	}
	results := make([]result, 0, len(jobs))
	for _, j := range jobs {
		st, err := j.d.st.Apply(ctx, j.a)
		results = append(results, result{j, st, err, mono(c.opt.Now())})
	}

	c.mu.Lock()
	for _, r := range results {
		d, a := r.j.d, r.j.a
		switch {
		case r.err == nil || errors.Is(r.err, hearth.ErrNotEffective):
			if !d.written.Equal(a) {
				d.since = now
			}
			// The device runs the command until its revert timer lapses,
			// counted from when it got the write: from the step's start
			// the agent would count it released while it still ran it.
			d.written, d.writtenAt, d.failing = a, r.done, false
			d.held, d.heldOK = a.Power(), a.Mode() == hearth.ModePower
			if r.st.HeldW != nil {
				d.held = *r.st.HeldW
			}
			if d.holdReported {
				// A write went through: the agent stands behind what the
				// device holds again (past the hold bound, the release).
				c.log.Info("device written again after holding an unconfirmed command", "device", a.Device(), "mode", a.Mode())
				d.holdReported = false
			}
			if d.heldOK {
				c.eval.Confirm(a.Device(), d.held)
			}
			if r.err != nil {
				c.setEffectiveLocked(d, "readback", map[string]any{"want_w": a.Power(), "mode": a.Mode(),
					"readback": r.st.Detail, "error": r.err.Error()})
			} else if d.notEffective == "readback" {
				c.setEffectiveLocked(d, "", nil)
			}
		default:
			if !d.failing && ctx.Err() == nil {
				c.log.Warn("device write failed", "device", a.Device(), "err", r.err)
				c.event(hearth.EventWriteFailed, map[string]any{"device": a.Device(), "error": r.err.Error()})
			}
			d.failing, d.heldOK = true, false
			// It holds what it held before, not this: the ramp starts
			// again from what it is measured doing.
			c.eval.Unconfirmed(a.Device())
			if d.overdue(now) && !d.holdReported && ctx.Err() == nil {
				// Neither refreshed nor released: nothing on the device
				// lapses, so it may hold its last command indefinitely.
				d.holdReported = true
				w, _ := d.mayHold()
				c.log.Error("device may still hold its last command: no timeout of its own, and it cannot be released",
					"device", a.Device(), "may_hold_w", w, "err", r.err)
				c.event(hearth.EventWriteFailed, map[string]any{"device": a.Device(), "error": r.err.Error(),
					"may_hold_w": roundW(w), "unconfirmed_s": math.Round(now.Sub(d.writtenAt).Seconds())})
			}
		}
	}
	prev := c.state
	c.state = c.stateLocked(inst, shown)
	changed := !prev.Same(c.state)
	fns := c.onState
	st := c.state
	c.mu.Unlock()
	if changed {
		for _, fn := range fns {
			fn(st)
		}
	}
}

// checkFollowLocked compares a device's measured power with the command
// it holds, EffectiveWithin after it was first written: outside max(100 W,
// 10 %) it does not follow (not_effective), and back inside it does again.
// An event marks each change, never each refresh.
func (c *Controller) checkFollowLocked(d *ctlDevice, a safety.Approved, now time.Time) {
	if !d.written.Valid() || d.written.Mode() != hearth.ModePower || !d.written.Equal(a) || !d.heldOK ||
		now.Sub(d.since) < c.opt.EffectiveWithin {
		return
	}
	o, ok := c.obs[a.Device()]
	p, has := o.Reading.Points[hearth.PointPower.String()]
	if !ok || !has || !p.Good() || o.At.Sub(d.since) < c.opt.EffectiveWithin {
		return
	}
	want := float64(d.held)
	off := math.Abs(p.Value-want) > max(100, 0.1*math.Abs(want))
	switch {
	case off && d.notEffective == "":
		c.setEffectiveLocked(d, "power", map[string]any{"want_w": want, "got_w": p.Value, "after_s": math.Round(now.Sub(d.since).Seconds()*10) / 10})
	case !off && d.notEffective == "power":
		c.setEffectiveLocked(d, "", map[string]any{"got_w": p.Value})
	}
}

// setEffectiveLocked records that a device does not follow (reason set)
// or follows again (""), with an event when that changes.
func (c *Controller) setEffectiveLocked(d *ctlDevice, reason string, data map[string]any) {
	if reason == d.notEffective {
		return
	}
	if data == nil {
		data = map[string]any{}
	}
	data["device"] = d.st.Name()
	if reason != "" {
		data["reason"] = reason
		c.log.Warn("device does not follow its command", "device", d.st.Name(), "reason", reason)
		c.event(hearth.EventNotEffective, data)
	} else {
		c.log.Info("device follows its command again", "device", d.st.Name())
		c.event(hearth.EventEffective, data)
	}
	d.notEffective = reason
}

func (c *Controller) activeLocked() *safety.Lease {
	if c.local != nil {
		return c.local
	}
	return c.cloud
}

// HoldBound is a Device whose command may outlast its RevertTimeout: one
// whose timeout is a setting of its own, seen to lapse later than the
// setting says (SMA's 300 s, seen at about 330 s). The loop refreshes by
// RevertTimeout and counts a device it cannot reach at its last command
// for HoldsUpTo.
type HoldBound interface {
	HoldsUpTo() time.Duration
}

// holdsUpTo is how long after its last write d may still run it.
func holdsUpTo(d Device) time.Duration {
	if h, ok := d.(HoldBound); ok {
		return max(h.HoldsUpTo(), d.RevertTimeout())
	}
	return d.RevertTimeout()
}

func (c *Controller) inputLocked(now time.Time, tgt safety.Target) safety.Input {
	in := safety.Input{Now: now, Target: tgt, EStop: c.estop, Grid: c.grid}
	for _, d := range c.opt.Devices {
		o, ok := c.obs[d.Name()]
		if !ok {
			o = safety.Observation{Reading: hearth.Reading{Device: d.Name()}}
		}
		// A device with no revert timer holds its last command until a
		// release is read back, however long that takes.
		cd := c.dev[d.Name()]
		if w, ok := cd.mayHold(); ok && (cd.unguarded || now.Sub(cd.writtenAt) < holdsUpTo(d)) {
			o.MayHold = &w
		}
		in.Devices = append(in.Devices, o)
	}
	return in
}

// judgedLocked is dec as the events and the state report it: without the
// devices no reading has been judged for yet. Until its first poll ends
// (with a reading, or with the error that makes it device_down) a device
// has no reading, which the rules hold as stale: it is kept in its safe
// state, quietly. Neither a trip event nor the state claims a
// max_reading_age no reading caused; the state says nothing of the device
// until a reading of it is judged, as no rule has judged it yet.
func (c *Controller) judgedLocked(dec safety.Decision) safety.Decision {
	devs := make([]safety.DeviceSafety, 0, len(dec.Devices))
	trips := map[hearth.Rule]bool{}
	for _, r := range dec.SiteTrips {
		trips[r] = true
	}
	for _, ds := range dec.Devices {
		if _, seen := c.obs[ds.Device]; !seen {
			continue
		}
		devs = append(devs, ds)
		for _, r := range ds.Trips {
			trips[r] = true
		}
	}
	if len(devs) == len(dec.Devices) {
		return dec
	}
	dec.Devices, dec.Trips = devs, slices.Sorted(maps.Keys(trips))
	return dec
}

// tripKey is one rule tripped on one device, or on the site (device "").
type tripKey struct {
	device string
	rule   hearth.Rule
}

func cmpTrip(a, b tripKey) int {
	return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.rule, b.rule))
}

// tripsOf lists what a decision has tripped, by device and rule.
func tripsOf(dec safety.Decision) map[tripKey]string {
	out := map[tripKey]string{}
	for _, r := range dec.SiteTrips {
		out[tripKey{"", r}] = "" // the e-stop and the meter need no detail
	}
	for _, ds := range dec.Devices {
		for _, r := range ds.Trips {
			out[tripKey{ds.Device, r}] = ds.Why[r]
		}
	}
	return out
}

// tripEventsLocked records a trip or trip_cleared for each rule that
// changed on each device (or on the site), and a clamp when the rule
// that binds the lease changes. A device that cannot be read is reported
// by device_down (the poller's), not by a trip.
func (c *Controller) tripEventsLocked(dec safety.Decision) {
	now := tripsOf(dec)
	data := func(k tripKey) map[string]any {
		m := map[string]any{"rule": k.rule}
		if k.device != "" {
			m["device"] = k.device
		}
		return m
	}
	for _, k := range slices.SortedFunc(maps.Keys(now), cmpTrip) {
		if _, was := c.trips[k]; was || k.rule == hearth.RuleDeviceDown {
			continue
		}
		m := data(k)
		if why := now[k]; why != "" {
			m["detail"] = why
		}
		c.log.Warn("safety trip", "device", k.device, "rule", k.rule, "detail", now[k])
		c.event(hearth.EventTrip, m)
	}
	for _, k := range slices.SortedFunc(maps.Keys(c.trips), cmpTrip) {
		if _, still := now[k]; still || k.rule == hearth.RuleDeviceDown {
			continue
		}
		c.log.Info("safety trip cleared", "device", k.device, "rule", k.rule)
		c.event(hearth.EventTripCleared, data(k))
	}
	c.trips = now
	rule := dec.Rule
	if rule.Limit() && dec.TargetW == nil {
		return // nothing is commanded yet: nothing is bound
	}
	if rule != hearth.RuleImport {
		c.importSince = time.Time{}
	} else if rule != c.rule && c.grid != nil {
		// The meter and the batteries are read apart: while a battery's
		// power changes, one meter sample can show import the battery's
		// reading does not yet. The binding is reported once a later
		// meter sample still shows it.
		if c.importSince.IsZero() {
			c.importSince = c.grid.At
		}
		if !c.grid.At.After(c.importSince) {
			return
		}
	}
	if rule != c.rule && rule.Limit() && c.activeLocked() != nil {
		c.event(hearth.EventClamped, c.clampData(c.activeLocked(), dec))
	}
	c.rule = rule
}

// clampData is a clamped event's data: the lease, the rule that binds it
// and what it allows, the rule's configured limit, and the device the rule
// bound when it is a device's own.
func (c *Controller) clampData(l *safety.Lease, dec safety.Decision) map[string]any {
	data := map[string]any{"lease_id": l.Setpoint.ID, "rule": dec.Rule, "allowed_w": roundPtr(dec.TargetW)}
	if l.Setpoint.Version != 0 {
		data["version"] = l.Setpoint.Version
	}
	if w, ok := c.opt.Limits.DeviceLimitW(dec.Rule, dec.RuleDevice); ok {
		data["limit_w"] = w
	}
	if dec.RuleDevice != "" {
		data["device"] = dec.RuleDevice
	}
	return data
}

func (c *Controller) stateLocked(now hearth.Instant, dec safety.Decision) hearth.State {
	synced := c.opt.Synced()
	s := hearth.State{Time: now.Wall.UTC(), Clock: clockState(synced), Mode: c.fallback, Safety: "ok", Trips: ruleStrings(dec.Trips)}
	if l := c.activeLocked(); l != nil {
		info := l.Info(now, synced, c.leaseFloorLocked(l, now))
		s.Lease = &info
		s.Mode = l.Target(now).Mode
	}
	if len(dec.Trips) > 0 {
		s.Safety = string(dec.Trips[0])
	}
	for _, ds := range dec.Devices {
		if s.Devices == nil {
			s.Devices = map[string]hearth.DeviceSafety{}
		}
		s.Devices[ds.Device] = deviceSafety(ds)
	}
	// applied_w is what the devices hold, by their read-back, not what
	// was approved: a device whose write failed holds none of it.
	var sum hearth.Watts
	held := false
	for _, dv := range c.opt.Devices {
		d := c.dev[dv.Name()]
		if d.heldOK && d.written.Mode() == hearth.ModePower {
			sum += d.held
			held = true
		}
		if d.notEffective != "" {
			s.NotEffective = append(s.NotEffective, dv.Name())
		}
		if d.holdReported {
			if s.Devices == nil {
				s.Devices = map[string]hearth.DeviceSafety{}
			}
			ds := s.Devices[dv.Name()]
			if ds.Safety == "" {
				ds.Safety = "ok"
			}
			w, _ := d.mayHold()
			w = roundW(w)
			ds.MayHoldW = &w
			s.Devices[dv.Name()] = ds
		}
	}
	if held {
		sum = roundW(sum)
		s.AppliedW = &sum
	}
	return s
}

// roundW rounds a power to 0.1 W: what a meter can tell apart, and no
// float noise in the payloads.
func roundW(w hearth.Watts) hearth.Watts { return hearth.Watts(math.Round(float64(w)*10) / 10) }

func clockState(synced bool) hearth.ClockState {
	if synced {
		return hearth.ClockSynced
	}
	return hearth.ClockUnsynced
}

// ruleStrings returns rules as the strings the payloads carry; nil for none.
func ruleStrings(rs []hearth.Rule) []string {
	if len(rs) == 0 {
		return nil
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

// deviceSafety is what the state says of one device.
func deviceSafety(ds safety.DeviceSafety) hearth.DeviceSafety {
	out := hearth.DeviceSafety{Safety: "ok", Trips: ruleStrings(ds.Trips)}
	switch {
	case ds.Down:
		out.Safety = string(hearth.RuleDeviceDown)
	case ds.Held != "" && ds.Held != hearth.RuleRelease:
		out.Safety = string(ds.Held)
	case len(ds.Trips) > 0:
		out.Safety = string(ds.Trips[0])
	}
	return out
}
