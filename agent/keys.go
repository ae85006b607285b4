package agent

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/uplink"
)

// keyState is the setpoint keys in force, for the diagnostics API.
type keyState struct {
	trusted []string // key ids
	revoked []string
}

// Keys reports the setpoint keys in force.
func (a *Agent) Keys() diag.KeysReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	return diag.KeysReport{Keys: slices.Clone(a.keys.trusted), Revoked: slices.Clone(a.keys.revoked)}
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
	a.mu.Lock()
	a.keys = keyState{trusted: slices.Sorted(maps.Keys(keys)), revoked: revoked}
	a.mu.Unlock()
	ended := a.ctl.Revoke(revoked)
	a.log.Info("setpoint keys reloaded", "keys", len(keys), "revoked", len(revoked), "lease_ended", ended)
	// Empty lists are [] on the wire, as the event's schema says, never null.
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
