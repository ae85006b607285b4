package agent

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/uplink"
)

// keyState is the setpoint keys in force, for the diagnostics API.
type keyState struct {
	trusted []string // key ids
	revoked []string
	closed  bool // no key in force, and unsigned refused
}

// Keys reports the setpoint keys in force.
func (a *Agent) Keys() diag.KeysReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	return diag.KeysReport{Keys: append([]string{}, a.keys.trusted...), Revoked: append([]string{}, a.keys.revoked...), Closed: a.keys.closed}
}

// ReloadKeys reads the config file again and puts its setpoint_keys and
// revoked_keys in force without a restart; a running lease signed by a
// key now revoked ends at once. A config that no longer validates changes
// nothing and returns its errors. Only the keys are taken: other changes
// need a restart.
func (a *Agent) ReloadKeys() (diag.KeysReport, error) {
	if a.cfg.Path == "" {
		return diag.KeysReport{}, errors.New("the agent's config was not read from a file: nothing to reload")
	}
	cfg, err := config.Load(a.cfg.Path)
	if err != nil {
		return diag.KeysReport{}, fmt.Errorf("reload %s: keys unchanged: %w", a.cfg.Path, err)
	}
	keys, err := uplink.SetpointKeys(cfg.Uplink.SetpointKeys)
	if err != nil {
		return diag.KeysReport{}, fmt.Errorf("reload %s: keys unchanged: %w", a.cfg.Path, err)
	}
	revoked := slices.Clone(cfg.Uplink.RevokedKeys)
	a.up.SetKeys(keys, revoked)
	required := a.keysRequired(cfg.Uplink, len(keys))
	a.up.RequireKeys(required)
	a.mu.Lock()
	a.keys = keyState{trusted: slices.Sorted(maps.Keys(keys)), revoked: revoked, closed: required && len(keys) == 0}
	a.mu.Unlock()
	ended := a.ctl.Revoke(revoked)
	a.log.Info("setpoint keys reloaded", "keys", len(keys), "revoked", len(revoked), "lease_ended", ended)
	// Empty lists are [], never null, in the event as in the report.
	a.events.Record("keys_reloaded", map[string]any{"keys": append([]string{}, slices.Sorted(maps.Keys(keys))...),
		"revoked": append([]string{}, revoked...), "lease_ended": ended})
	r := a.Keys()
	r.LeaseEnded = ended
	return r, nil
}

// ResetVersion forgets the highest setpoint version, so that the cloud
// can number again from 1 after a lockout.
func (a *Agent) ResetVersion() (uint64, error) {
	if !a.controls() {
		return 0, diag.ErrNoControl
	}
	return a.ctl.ResetVersion(), nil
}

// ResetFloor sets the clock floor back to the build time, so that leases
// are judged again after a floor went far ahead (hearth clock
// reset-floor).
func (a *Agent) ResetFloor() (diag.ResetFloorResult, error) {
	from, to := a.ctl.ResetFloor()
	return diag.ResetFloorResult{From: timePtr(from), To: timePtr(to)}, nil
}

// timePtr is t, or nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// metaKeysConfigured is the lease-state key that remembers that setpoint
// keys were once configured on this gateway.
const metaKeysConfigured = "uplink.keys_configured"

// keysRequired says whether an empty key set must refuse every setpoint:
// keys are configured now or were once (remembered in the lease state,
// which survives a corrupt buffer), or some are revoked, and unsigned
// setpoints are not explicitly allowed (uplink.allow_unsigned). So a
// revocation that leaves no key closes the gateway rather than opening it.
func (a *Agent) keysRequired(u config.UplinkConfig, keys int) bool {
	had := false
	if v, ok, err := a.leases.Meta(metaKeysConfigured); err == nil && ok && v != "" {
		had = true
	}
	if keys > 0 && !had {
		if err := a.leases.SetMeta(metaKeysConfigured, "true"); err != nil {
			a.log.Error("remember that setpoint keys are configured", "err", err)
		}
		had = true
	}
	required := !u.AllowUnsigned && (had || len(u.RevokedKeys) > 0)
	if keys == 0 && required {
		a.log.Warn("no setpoint key in force: every cloud setpoint is refused (no_keys) until a key is configured, or uplink.allow_unsigned: true")
	}
	return required
}
