package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/internal/harness"
)

// simBatteryW reads the battery power a vendor simulator serves at addr,
// through the profile's own map, in hearth's sign (positive discharging).
func simBatteryW(t *testing.T, addr, profile string) (float64, error) {
	t.Helper()
	p, err := drivers.EmbeddedProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	bus, err := drivers.OpenBus(drivers.LinkConfig{Transport: "tcp", Address: addr, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pts, err := drivers.ReadProfile(ctx, bus, uint8(unitOf(profile)), p, drivers.Plan(p.Points, p.Holes, p.MaxGap))
	if err != nil {
		return 0, err
	}
	pw := pts[hearth.PointPower.String()]
	if !pw.Good() {
		return 0, fmt.Errorf("power_w reads %s", pw.Quality)
	}
	return pw.Value, nil
}

// waitSimW polls the simulator's battery power until cond holds.
func waitSimW(t *testing.T, addr, profile, what string, cond func(w float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		w, err := simBatteryW(t, addr, profile)
		if err == nil && cond(w) {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited for %s: battery %g W (%v)", what, w, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUnguardedCapAcrossAKill: the real agent drives `hearthsim --profile
// sungrow_sh` (no timeout on the device; allow_unguarded_control with
// unguarded_max_w 800). A lease of -3000 W is acked clamped by
// unguarded_max_w and the battery charges 800 W, no more; SIGKILLed, the
// agent leaves the battery holding at most that; started again after the
// lease has ended, it releases the battery to its own logic.
func TestUnguardedCapAcrossAKill(t *testing.T) {
	t.Parallel()
	const profile, gw, capW = "sungrow_sh", "gw-unguarded-cap", 800
	mq := startBroker(t)
	addr := startSimProfile(t, profile, "--load", "300", "--pv", "0")
	text := strings.Replace(fmt.Sprintf(vendorConfig, addr, mq.URL(), true, profile),
		"    allow_unguarded_control: true\n", fmt.Sprintf("    allow_unguarded_control: true\n    unguarded_max_w: %d\n", capW), 1)
	_, _, cfg := newAgentConfig(t, gw, strings.Replace(text, "max_charge_w: 1500", "max_charge_w: 3000", 1))
	base := "hearth/v1/" + gw
	agent, rec := startReporting(t, mq.URL(), gw, cfg)

	// A lease that ends while the agent is dead: the restart has nothing
	// to resume, and releases.
	now := time.Now()
	validUntil := now.Add(15 * time.Second)
	ack := sendSetpoint(t, rec, mq.URL(), gw, powerLease("lease-cap", gw, 1, now, validUntil, -3000))
	if ack.Result != hearth.ResultClamped || ack.Reason != hearth.RuleReason(hearth.RuleUnguardedMax) || ack.AppliedW == nil || *ack.AppliedW != -capW {
		t.Fatalf("ack %+v, want clamped by %s at %d W", ack, hearth.RuleUnguardedMax, -capW)
	}
	rec.WaitFor(t, 10*time.Second, func(m []harness.Message) bool {
		for _, msg := range m {
			e := string(msg.Payload)
			if msg.Topic == base+"/event" && strings.Contains(e, `"clamped"`) && strings.Contains(e, `"unguarded_max_w"`) && strings.Contains(e, `"limit_w":800`) {
				return true
			}
		}
		return false
	})
	waitSimW(t, addr, profile, "the battery to charge at the cap", func(w float64) bool { return w == -capW })

	agent.Kill()
	for range 10 {
		w, err := simBatteryW(t, addr, profile)
		if err != nil {
			t.Fatal(err)
		}
		if w < -capW || w > capW {
			t.Fatalf("agent killed: the battery runs %g W, beyond unguarded_max_w %d W", w, capW)
		}
		if w != -capW {
			t.Fatalf("agent killed: the battery runs %g W; an unguarded device holds its last command (%d W)", w, -capW)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(validUntil.Add(time.Second)))
	agent.Restart()
	waitSimW(t, addr, profile, "the restarted agent to release the battery to self-consumption (300 W load)", func(w float64) bool { return w == 300 })
}
