package control

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/safety"
)

// Submit validates a setpoint received at received (on the controller's
// clocks) in the order of the contract: version, time, values, safety. An
// accepted lease replaces the current one, is persisted with the highest
// version, and runs from the next step of the loop, which Submit wakes.
// Every outcome but a duplicate is also recorded as an event.
//
// A lease with the highest version seen that is not running (it ended, or
// a restart ended it) is not a duplicate but over: acked expired, reason
// ended. The issued_at of a verified signed lease raises the floor, once
// the lease is accepted (a refused one moves nothing).
func (c *Controller) Submit(sp hearth.Setpoint, received hearth.Instant) hearth.Ack {
	c.mu.Lock()
	ack, accepted := c.submitLocked(sp, received)
	c.mu.Unlock()
	if accepted {
		c.wake()
	}
	return ack
}

func (c *Controller) submitLocked(sp hearth.Setpoint, received hearth.Instant) (hearth.Ack, bool) {
	synced := c.opt.Synced()
	ack := hearth.Ack{ID: sp.ID, Version: sp.Version, Clock: clockState(synced), KeyID: sp.KeyID}
	floor := c.floor.now(received)
	running := c.cloud != nil && c.cloud.Setpoint.Version == sp.Version && c.cloud.Setpoint.ID == sp.ID
	var v safety.Verdict
	if sp.Version == c.highest && !running {
		v = safety.Verdict{Result: hearth.ResultExpired, Reason: hearth.ReasonEnded}
	} else {
		v = c.opt.Limits.Check(sp, c.highest, received, synced, floor, c.opt.MeterDevice != "")
	}
	if v.OK && len(c.dev) == 0 && sp.Mode != hearth.ModeAuto {
		// Read-only devices only: acking it applied would tell the
		// cloud a battery follows that does not.
		v = safety.Verdict{Result: hearth.ResultRejected, Reason: hearth.ReasonNoDevice}
	}
	if v.OK && c.estop {
		v = safety.Verdict{Result: hearth.ResultRejected, Reason: hearth.RuleReason(hearth.RuleEStop)}
	}
	lease := safety.Accept(sp, safety.SourceCloud, received, synced, floor)
	if v.OK && lease.Hold <= 0 {
		v = safety.Verdict{Result: hearth.ResultExpired, Reason: hearth.ReasonExpired}
	}
	if !v.OK {
		ack.Result, ack.Reason = v.Result, v.Reason
		if v.Result == hearth.ResultStale {
			h := c.highest
			ack.HighestVersion = &h
			ack.Detail = fmt.Sprintf("version %d is below %d, the highest accepted", sp.Version, h)
		}
		if v.Result != hearth.ResultDuplicate {
			c.event(hearth.EventSetpointRejected, withKey(map[string]any{"lease_id": sp.ID, "version": sp.Version, "result": v.Result, "reason": v.Reason}, sp.KeyID))
		}
		return ack, false
	}
	// Durable before anything runs or is acked: a version a restart would
	// forget is a replay guard that does not hold.
	if err := c.opt.Store.SetMeta(metaVersion, strconv.FormatUint(sp.Version, 10)); err != nil {
		c.log.Error("persist setpoint version: lease refused", "id", sp.ID, "version", sp.Version, "err", err)
		return c.notDurableLocked(ack, sp), false
	}
	c.highest = sp.Version
	if err := c.persistErr(metaLease, &lease); err != nil {
		// The version is on disk (a redelivery stays refused); the lease
		// is not, so it does not run: the running one, if any, runs on.
		c.log.Error("persist lease: lease refused", "id", sp.ID, "version", sp.Version, "err", err)
		return c.notDurableLocked(ack, sp), false
	}
	if sp.KeyID != "" {
		// The cloud signed it and it is accepted: true time is no earlier
		// than its issue. A refused message moves nothing.
		c.signedLocked(received, sp.IssuedAt)
	}
	hold := math.Round(lease.Hold.Seconds()*10) / 10
	ack.HoldS = &hold
	d := c.eval.Preview(c.inputLocked(mono(received), lease.Target(received)))
	ack.Result, ack.AppliedW, ack.Excluded = hearth.ResultApplied, roundPtr(d.TargetW), excluded(d)
	switch d.Rule {
	case "":
	case hearth.RuleStale, hearth.RuleReadingQuality:
		// Accepted, but no device can be commanded until it is read:
		// the ack says why nothing is applied yet.
		ack.Reason = hearth.RuleReason(d.Rule)
	default:
		ack.Result, ack.Reason = hearth.ResultClamped, hearth.RuleReason(d.Rule)
		if d.TargetW != nil {
			// A rule that hands the device back to its own logic allows
			// no power to clamp to: its trip event says so, not a clamp.
			data := c.clampData(&lease, d)
			if sp.PowerW != nil {
				data["requested_w"] = *sp.PowerW
			}
			c.event(hearth.EventClamped, data)
		}
		// The next step binds by the same rule: one clamp, one event.
		c.rule = d.Rule
	}
	if c.local != nil {
		// Accepted, but the local lease runs until it ends: the ack says
		// what is commanded now.
		ld := c.eval.Preview(c.inputLocked(mono(received), c.local.Target(received)))
		ack.Result, ack.Reason, ack.AppliedW = hearth.ResultClamped, hearth.ReasonLocalOverride, roundPtr(ld.TargetW)
	}
	if c.cloud != nil {
		c.endLocked(c.cloud, "replaced", &lease)
	}
	c.cloud = &lease
	c.persistFloorLocked(received)
	c.event(hearth.EventLeaseStarted, leaseData(&lease, nil))
	return ack, true
}

// excluded names the devices a decision holds out of the site's shares,
// with the rule holding each; nil when every device takes part.
func excluded(d safety.Decision) map[string]string {
	var out map[string]string
	for _, ds := range d.Devices {
		if ds.Held == "" || ds.Held == hearth.RuleRelease {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[ds.Device] = deviceSafety(ds).Safety
	}
	return out
}

// notDurableLocked refuses sp because its state could not be written.
func (c *Controller) notDurableLocked(ack hearth.Ack, sp hearth.Setpoint) hearth.Ack {
	ack.Result, ack.Reason = hearth.ResultRejected, hearth.ReasonNotDurable
	c.event(hearth.EventSetpointRejected, withKey(map[string]any{"lease_id": sp.ID, "version": sp.Version, "result": ack.Result, "reason": ack.Reason}, sp.KeyID))
	return ack
}

func roundPtr(w *hearth.Watts) *hearth.Watts {
	if w == nil {
		return nil
	}
	r := roundW(*w)
	return &r
}

func withKey(m map[string]any, keyID string) map[string]any {
	if keyID != "" {
		m["key_id"] = keyID
	}
	return m
}

// Override starts a local lease (hearth mode set MODE --for D): it takes
// precedence over any cloud lease until it ends, then the cloud lease (if
// still valid) or the fallback runs again. idle and auto may be set
// locally, and power (powerW, within ±LocalMaxW) to check sign and wiring
// at commissioning; every command still passes the limits. A local lease
// runs on the monotonic clock alone: no wall clock step moves it.
func (c *Controller) Override(mode hearth.Mode, powerW *hearth.Watts, d time.Duration) (hearth.Ack, error) {
	switch mode {
	case hearth.ModeIdle, hearth.ModeAuto:
		if powerW != nil {
			return hearth.Ack{}, fmt.Errorf("mode %s takes no power", mode)
		}
	case hearth.ModePower:
		if powerW == nil || math.IsNaN(float64(*powerW)) || math.Abs(float64(*powerW)) > float64(c.opt.LocalMaxW) {
			return hearth.Ack{}, fmt.Errorf("mode power locally needs a power within ±%g W (a test power, not an operating point)", float64(c.opt.LocalMaxW))
		}
	default:
		return hearth.Ack{}, fmt.Errorf("mode %q cannot be set locally (idle, auto, or power for a test)", mode)
	}
	if d <= 0 || d > c.opt.Limits.MaxLease {
		return hearth.Ack{}, fmt.Errorf("duration %s is outside 0..%s (safety.max_lease)", d, c.opt.Limits.MaxLease)
	}
	if len(c.dev) == 0 && mode != hearth.ModeAuto {
		return hearth.Ack{}, fmt.Errorf("mode %s: %s: this gateway commands no device (read-only profiles, or no allow_unguarded_control)", mode, hearth.ReasonNoDevice)
	}
	now := c.opt.Now()
	c.mu.Lock()
	wall := now.Wall
	sp := hearth.Setpoint{ID: "local-" + strconv.FormatInt(wall.UnixNano(), 36), IssuedAt: wall, ValidUntil: wall.Add(d),
		Mode: mode, PowerW: powerW, Fallback: c.fallback}
	l := safety.Accept(sp, safety.SourceLocal, now, true, time.Time{})
	if c.local != nil {
		c.endLocked(c.local, "replaced", &l)
	}
	c.local = &l
	c.persist(metaLocal, &l)
	c.event(hearth.EventLeaseStarted, leaseData(&l, nil))
	ack := hearth.Ack{ID: sp.ID, Result: hearth.ResultApplied, Clock: clockState(c.opt.Synced())}
	d2 := c.eval.Preview(c.inputLocked(mono(now), l.Target(now)))
	ack.AppliedW, ack.Excluded = roundPtr(d2.TargetW), excluded(d2)
	if d2.Rule != "" {
		ack.Reason = hearth.RuleReason(d2.Rule)
		if d2.Rule != hearth.RuleStale && d2.Rule != hearth.RuleReadingQuality {
			ack.Result = hearth.ResultClamped
		}
	}
	c.mu.Unlock()
	c.wake()
	return ack, nil
}

// ClearOverride ends a local lease early.
func (c *Controller) ClearOverride() {
	c.mu.Lock()
	if c.local != nil {
		c.endLocked(c.local, "cleared", c.cloud)
		c.local = nil
		c.persist(metaLocal, nil)
	}
	c.mu.Unlock()
	c.wake()
}

// Revoke ends at once a cloud lease signed with one of the key ids, with
// a lease_ended event (reason key_revoked), and reports whether it did.
// The keys themselves are refused by the uplink from now on.
func (c *Controller) Revoke(keyIDs []string) bool {
	c.mu.Lock()
	ended := false
	if l := c.cloud; l != nil && l.Setpoint.KeyID != "" && slices.Contains(keyIDs, l.Setpoint.KeyID) {
		c.setFallback(l.Setpoint.Fallback)
		c.endLocked(l, "key_revoked", nil)
		c.cloud = nil
		c.persist(metaLease, nil)
		ended = true
	}
	c.mu.Unlock()
	c.wake()
	return ended
}

// ResetVersion forgets the highest setpoint version accepted, so that the
// cloud can start numbering again (after a version so high that no later
// one fits: a lockout). It is a local, deliberate act (hearth lease
// reset-version, on the gateway itself); the lease running, if any, runs
// on. It records a version_reset event and returns the version forgotten.
func (c *Controller) ResetVersion() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.highest
	c.highest = 0
	if err := c.opt.Store.SetMeta(metaVersion, "0"); err != nil {
		c.log.Error("persist setpoint version", "err", err)
	}
	c.log.Warn("setpoint version reset", "from", old)
	c.event(hearth.EventVersionReset, map[string]any{"from_version": old})
	return old
}

// HighestVersion returns the highest setpoint version accepted.
func (c *Controller) HighestVersion() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.highest
}

// expireLocked ends the leases that are over at now.
func (c *Controller) expireLocked(now hearth.Instant, synced bool) {
	if c.local != nil && c.local.Expired(now, synced, time.Time{}) {
		c.endLocked(c.local, "expired", c.cloud)
		c.local = nil
		c.persist(metaLocal, nil)
	}
	if c.cloud != nil && c.cloud.Expired(now, synced, c.floor.now(now)) {
		c.setFallback(c.cloud.Setpoint.Fallback)
		c.endLocked(c.cloud, "expired", nil)
		c.cloud = nil
		c.persist(metaLease, nil)
	}
}

// leaseFloorLocked is the floor a lease is judged by: none for a local
// lease, which runs on the monotonic clock alone.
func (c *Controller) leaseFloorLocked(l *safety.Lease, now hearth.Instant) time.Time {
	if l.Source == safety.SourceLocal {
		return time.Time{}
	}
	return c.floor.now(now)
}

// setFallback makes m the mode that runs with no lease, persisted so that a
// restart runs the same.
func (c *Controller) setFallback(m hearth.Mode) {
	if m == "" || m == c.fallback {
		return
	}
	c.fallback = m
	if err := c.opt.Store.SetMeta(metaFallback, string(m)); err != nil {
		c.log.Error("persist fallback", "err", err)
	}
}

// endLocked records that l ended for reason. next is the lease that runs
// instead, if any; else the fallback runs.
func (c *Controller) endLocked(l *safety.Lease, reason string, next *safety.Lease) {
	fb := l.Setpoint.Fallback
	if l.Source == safety.SourceLocal {
		fb = c.fallback
	}
	extra := map[string]any{"reason": reason, "fallback": fb}
	if next != nil && next != l {
		extra["next_lease_id"] = next.Setpoint.ID
	}
	c.log.Info("lease ended", "id", l.Setpoint.ID, "version", l.Setpoint.Version, "reason", reason, "fallback", fb)
	c.event(hearth.EventLeaseEnded, leaseData(l, extra))
}

func leaseData(l *safety.Lease, extra map[string]any) map[string]any {
	m := map[string]any{"lease_id": l.Setpoint.ID, "source": l.Source,
		"mode": l.Setpoint.Mode, "valid_until": l.Setpoint.ValidUntil, "fallback": l.Setpoint.Fallback,
		"hold_s": math.Round(l.Hold.Seconds()*10) / 10}
	if l.Setpoint.Version != 0 {
		m["version"] = l.Setpoint.Version
	}
	if l.Setpoint.PowerW != nil {
		m["power_w"] = *l.Setpoint.PowerW
	}
	if l.Setpoint.KeyID != "" {
		m["key_id"] = l.Setpoint.KeyID
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func (c *Controller) persist(key string, l *safety.Lease) {
	if err := c.persistErr(key, l); err != nil {
		c.log.Error("persist lease", "key", key, "err", err)
	}
}

// persistErr writes l (nil: none) under key and returns what failed.
func (c *Controller) persistErr(key string, l *safety.Lease) error {
	v := ""
	if l != nil {
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("encode lease: %w", err)
		}
		v = string(b)
	}
	return c.opt.Store.SetMeta(key, v)
}

func (c *Controller) event(typ hearth.EventType, data map[string]any) { c.opt.Event(string(typ), data) }
