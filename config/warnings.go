package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/hearth-energy/hearth/drivers"
)

// Warnings are settings that are valid but risky: the agent runs with
// them, and `hearth config check` reports each on its line so that an
// installer decides knowingly. They are computed by Parse and Load.
func (c *Config) Warnings() []Error { return c.warnings }

// Bounds beyond which a limit is implausible for a home battery, or risky
// for lithium cells: far outside what any data sheet allows, or a number
// in the wrong unit (kW for W).
const (
	maxPlausibleW      = 50_000 // a large home battery is 10–20 kW
	minPlausibleW      = 100    // below: the battery can hardly be used, or kW was meant
	lithiumCellVMax    = 4.25   // NMC charges to 4.2 V, LFP to 3.65 V
	lithiumCellVMin    = 2.5    // below, cells are damaged
	maxCellTempC       = 60     // lithium cells' operating range ends about here
	minSoCWindowPct    = 20     // a narrower window leaves little to use
	minSoCPct          = 5      // deeper discharge shortens the battery's life
	maxReasonableAge   = time.Minute
	maxReasonableLease = 7 * 24 * time.Hour
)

// warner collects warnings at the lines of their keys.
type warner struct {
	v    *validator
	list []Error
}

func (w *warner) warnf(path, format string, args ...any) {
	n := len(w.v.errs)
	w.v.errorf(path, format, args...)
	w.list = append(w.list, w.v.errs[n])
	w.v.errs = w.v.errs[:n]
}

// warnings finds the risky settings of a valid config.
func (v *validator) warnings(c *Config) []Error {
	w := &warner{v: v}
	key := "uplink.broker"
	if len(c.Uplink.Brokers) > 0 {
		key = "uplink.brokers"
	}
	// Every node has the same scheme (checked): the first speaks for all.
	if u, err := url.Parse(append(c.Uplink.Nodes(), "")[0]); err == nil && (u.Scheme == "tcp" || u.Scheme == "mqtt") && !loopback(u.Hostname()) {
		w.warnf(key, "plain %s:// to %s: readings, setpoints and any password cross the network unencrypted, and nothing proves the broker is the operator's; use tls:// with ca_file and a client certificate", u.Scheme, u.Host)
	}
	if c.Uplink.CleanSession {
		w.warnf("uplink.clean_session", "true: the broker forgets the gateway's session on every disconnect, so setpoints published while it is offline are lost; the cloud must resend every unacked lease (docs/mqtt.md, Leases)")
	}
	w.keys(c.Uplink)
	for i, d := range c.Devices {
		key := fmt.Sprintf("devices[%d].allow_unguarded_control", i)
		pr := d.profile
		guarded := pr == nil || pr.Control == nil || pr.Control.Guarded()
		switch {
		case !guarded && !d.AllowUnguardedControl:
			w.warnf(fmt.Sprintf("devices[%d].profile", i), "profile %s has no device-side timeout: device %s is only read, never commanded, unless allow_unguarded_control: true (then a battery whose agent dies mid-lease holds the last command until hearth starts again)", pr.Name, d.Name)
		case !guarded:
			w.warnf(key, "device %s has no timeout of its own: if hearth dies mid-lease the battery holds the last command until hearth starts again and releases it; hearth releases it on every stop and start, and commands it at most unguarded_max_w (%g W), so that is the most it can hold", d.Name, d.UnguardedCapW())
		case d.AllowUnguardedControl:
			w.warnf(key, "has no effect: profile %s is read-only or has its own timeout", pr.Name)
		}
		if d.UnguardedMaxW != nil && (guarded || !d.AllowUnguardedControl) {
			w.warnf(fmt.Sprintf("devices[%d].unguarded_max_w", i), "has no effect: it bounds only a device commanded under allow_unguarded_control")
		}
		if pr != nil && pr.Discovery == "sunspec" && d.Name != c.Safety.MeterDevice {
			m, r := pr.Model124Writes(), c.Safety.RevertTimeout.D()
			if m.Storage == drivers.StorageFlash && r < 3*m.Budget.MinInterval.D() {
				w.warnf("safety.revert_timeout", "%s: device %s (profile %s) keeps model 124 in flash, and hearth writes it every third of revert_timeout (%s) while a lease runs, however little the command changes; %s or more keeps those writes within its write budget of one per %s", r, d.Name, pr.Name, r/3, 3*m.Budget.MinInterval.D(), m.Budget.MinInterval.D())
			}
		}
	}
	switch h, _, _ := net.SplitHostPort(c.HTTPListen); {
	case c.HTTPPasswordHash != "" && c.HTTPListen == "":
		w.warnf("http_password_hash", "set, but http_listen is empty: no page asks for it")
	case c.HTTPPasswordHash != "" && !loopback(h):
		w.warnf("http_listen", "the local page is plain HTTP: its password crosses the local network unencrypted, so use it only on a network you trust")
	}
	s := c.Safety
	for _, l := range []struct {
		key string
		w   float64
	}{{"max_charge_w", s.MaxChargeW}, {"max_discharge_w", s.MaxDischargeW}} {
		switch {
		case l.w > maxPlausibleW:
			w.warnf("safety."+l.key, "%g W is far beyond a home battery (a large one does 10–20 kW): check the figure and its unit, watts", l.w)
		case l.w > 0 && l.w < minPlausibleW:
			w.warnf("safety."+l.key, "%g W leaves the battery next to useless: kilowatts meant? The unit is watts", l.w)
		}
	}
	if s.ExportLimitW != nil && *s.ExportLimitW > maxPlausibleW {
		w.warnf("safety.export_limit_w", "%g W is far beyond a home connection: check the figure and its unit, watts", *s.ExportLimitW)
	}
	if s.SocMinPct < minSoCPct {
		w.warnf("safety.soc_min_pct", "%g %%: discharging this deep shortens the battery's life; vendors keep %d–10 %%", s.SocMinPct, minSoCPct)
	}
	if s.SocMaxPct-s.SocMinPct < minSoCWindowPct {
		w.warnf("safety.soc_max_pct", "a window of %g %% (soc_min_pct %g to soc_max_pct %g) leaves little of the battery to use", s.SocMaxPct-s.SocMinPct, s.SocMinPct, s.SocMaxPct)
	}
	if s.CellVMax > lithiumCellVMax {
		w.warnf("safety.cell_v_max", "%g V is beyond any lithium cell's charge limit (NMC 4.2 V, LFP 3.65 V): check the cell data sheet", s.CellVMax)
	}
	if s.CellVMin < lithiumCellVMin {
		w.warnf("safety.cell_v_min", "%g V lets lithium cells be discharged into damage (below %g V): check the cell data sheet", s.CellVMin, lithiumCellVMin)
	}
	if s.TempCMax > maxCellTempC {
		w.warnf("safety.temp_c_max", "%g °C is beyond lithium cells' operating range (about %d °C)", s.TempCMax, maxCellTempC)
	}
	if s.TempCMin < 0 {
		w.warnf("safety.temp_c_min", "%g °C: charging lithium cells below 0 °C plates them with lithium; keep 0 unless the battery heats its cells", s.TempCMin)
	}
	if s.MaxReadingAge.D() > maxReasonableAge {
		w.warnf("safety.max_reading_age", "%s: the battery is commanded on readings that old; a device that stops answering goes unnoticed that long", s.MaxReadingAge)
	}
	if s.MaxLease.D() > maxReasonableLease {
		w.warnf("safety.max_lease", "%s: a cloud that goes away can hold the battery to its last setpoint that long", s.MaxLease)
	}
	return w.list
}

// loopback reports whether host is this machine: a broker there (a local
// bridge) is not reached over the network.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// keys warns about a key set that is open, or closed by accident.
func (w *warner) keys(u UplinkConfig) {
	live := 0
	for id := range u.SetpointKeys {
		if !slices.Contains(u.RevokedKeys, id) {
			live++
		}
	}
	switch {
	case live > 0 && u.AllowUnsigned:
		w.warnf("uplink.allow_unsigned", "has no effect while setpoint_keys holds a key in force; it re-allows unsigned setpoints the moment the last key is revoked or removed")
	case live > 0:
	case u.AllowUnsigned:
		w.warnf("uplink.allow_unsigned", "no setpoint key is in force and unsigned setpoints are allowed: anyone who can publish on the gateway's …/setpoint topic commands the battery; configure the cloud's ed25519 public keys")
	case len(u.RevokedKeys) > 0:
		w.warnf("uplink.revoked_keys", "every setpoint key is revoked and none is left in setpoint_keys: the gateway refuses every cloud setpoint (no_keys), signed or not, until a key is configured; unsigned ones only with uplink.allow_unsigned: true")
	default:
		// On a gateway that had keys, every setpoint is refused (no_keys)
		// instead; docs/mqtt.md says so.
		w.warnf("uplink", "no setpoint_keys: unsigned setpoints are accepted from anyone who can publish on the gateway's …/setpoint topic; configure the cloud's ed25519 public keys")
	}
}
