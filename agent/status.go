package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/uplink"
)

// The diagnostics API's view of the agent: what each part knows, in the
// API's records.
var _ diag.Agent = (*Agent)(nil)

// Status gathers what `hearth status` shows.
func (a *Agent) Status() diag.StatusReport {
	now := time.Now().UTC()
	r := diag.StatusReport{
		Time: now,
		Agent: diag.AgentReport{
			Version: hearth.Version, GatewayID: a.cfg.GatewayID, Boot: a.clock.Boot,
			Started: a.clocks.Started().UTC(), UptimeS: a.clocks.Since().Seconds(), Clock: a.clock.State(),
			LogLevel: a.logLevel.Level().String(), LocalModes: a.localModes(),
		},
	}
	fl := a.ctl.Floor()
	r.Agent.ClockFloor = &diag.ClockFloorReport{Floor: timePtr(fl.Floor), WallAhead: fl.WallAhead, Distrusted: timePtr(fl.Distrusted),
		BuildTime: timePtr(a.buildTime), BuildTimeFrom: a.buildFrom}
	held := a.ctl.Held()
	for _, d := range a.devices {
		dr := d.report()
		if w, ok := held[d.cfg.Name]; ok {
			dr.HeldW = &w
		}
		r.Devices = append(r.Devices, dr)
	}
	st := a.ctl.State()
	r.Safety = diag.SafetyReport{State: st.Safety, Trips: st.Trips, Mode: string(st.Mode), AppliedW: st.AppliedW, Devices: st.Devices}
	if r.Safety.Trips == nil {
		r.Safety.Trips = []string{}
	}
	if st.Lease != nil {
		r.Lease = &diag.LeaseReport{LeaseInfo: *st.Lease}
	}
	us := a.up.Stats()
	r.Uplink = diag.UplinkReport{
		Broker: us.Broker, Connected: us.Connected, Attempts: us.Attempts,
		Connects: us.Connects, Published: us.Published, LastError: us.LastError,
	}
	if nodes := a.cfg.Uplink.Nodes(); len(nodes) > 1 {
		r.Uplink.Brokers = nodes
	}
	if !us.BootDelayUntil.IsZero() {
		t := us.BootDelayUntil.UTC()
		r.Uplink.BootDelayUntil = &t
	}
	if !us.NextAttempt.IsZero() {
		t := us.NextAttempt.UTC()
		r.Uplink.NextAttempt = &t
	}
	if !us.Dialed.IsZero() {
		r.Uplink.LastDial = &diag.DialReport{Broker: us.DialedBroker, At: us.Dialed.UTC()}
	}
	if us.Connected {
		t := us.ConnectedSince.UTC()
		r.Uplink.ConnectedSince = &t
	} else {
		t := a.conn.DownSince()
		r.Uplink.DownSince = &t
	}
	r.Buffer = a.Buffer()
	r.Judge(now)
	return r
}

// Buffer reports the buffer's depth, size and wear.
func (a *Agent) Buffer() diag.BufferReport {
	st, err := a.store.Stats()
	if err != nil {
		return diag.BufferReport{Error: err.Error()}
	}
	b := diag.BufferReport{
		PendingReadings: st.PendingReadings, PendingAggregates: st.PendingAggregates, PendingEvents: st.PendingEvents,
		FileBytes: st.FileBytes, MaxBytes: st.MaxBytes, LastSeq: st.LastSeq,
		Compactions: st.Compactions, ReadingsCompacted: st.ReadingsCompacted, AggregatesDropped: st.AggregatesDropped,
		ReadingsDropped: st.ReadingsDropped, EventsDropped: st.EventsDropped, DiskFull: st.DiskFull,
		ReadingsRefused: st.ReadingsRefused, WriteBytes: st.WriteBytes, CommitsPerHour: st.CommitsPerHour,
	}
	if !st.OldestPending.IsZero() {
		t := st.OldestPending.UTC()
		b.OldestPending = &t
	}
	// The buffer counts the seqs reserved for readings held in memory; the
	// writer knows the last one used. Asked after the buffer, so a block
	// reserved in between is never shown as used.
	b.ReservedSeq = st.LastSeq
	if seq, ok := a.writer.LastSeq(); ok {
		b.LastSeq = seq
	}
	return b
}

func (d *device) report() diag.DeviceReport {
	s := d.poller.Stats()
	r := diag.DeviceReport{
		Name: d.cfg.Name, Transport: d.cfg.Transport, Address: d.cfg.Address, UnitID: d.cfg.UnitID,
		Up: s.Polls > 0 && s.LastErr == nil, Polls: s.Polls, Failures: s.Failures,
		PollMS: float64(s.PollTime.Microseconds()) / 1000,
	}
	if s.Polls > 0 {
		t := s.Last.Time
		r.LastPoll = &t
	}
	if !s.LastOK.IsZero() {
		t := s.LastOK.UTC()
		r.LastOK = &t
	}
	if s.LastErr != nil {
		// A device marked down is asked again only on its probe schedule;
		// in between, the link's error (drivers.UnitDownError) still
		// carries the cause.
		r.LastError = s.LastErr.Error()
		r.Cause, r.Hint = diag.DeviceCause(s.LastErr, d.cfg.Transport, d.cfg.Address, d.cfg.UnitID)
		if !s.LastOK.IsZero() && diag.LinkCause(r.Cause) {
			// The same address answered before: not a wrong port, but a
			// device or link that went away.
			r.Hint = fmt.Sprintf("%s answered until %s ago: is the device powered, its cable or network still there? hearth device probe %s asks again now",
				d.cfg.Address, diag.Age(time.Since(s.LastOK)), d.cfg.Name)
		}
		t := s.DownSince.UTC()
		r.DownSinceTS = &t
		if us := d.bus.UnitStats(uint8(d.cfg.UnitID)); us.Down && !us.NextProbe.IsZero() {
			np := us.NextProbe.UTC()
			r.NextProbe = &np
		}
	}
	if id := d.drv.Identity(); id.Serial != "" || id.Manufacturer != "" {
		r.Identity = &diag.Identity{Manufacturer: id.Manufacturer, Model: id.Model, Serial: id.Serial, Firmware: id.Firmware}
	}
	return r
}

// Points returns the latest value of every point, of one device or all.
func (a *Agent) Points(device string) ([]diag.PointReport, error) {
	now := time.Now()
	out := []diag.PointReport{}
	found := device == ""
	for _, d := range a.devices {
		if device != "" && d.cfg.Name != device {
			continue
		}
		found = true
		last := d.poller.Stats().Last
		for _, name := range last.PointNames() {
			p := last.Points[name]
			// While a device is down its reading names every point it
			// might have; one it never answered for is not listed as if
			// it had been read.
			if seen, answered := a.lastGood.Answered(d.cfg.Name, name); p.Quality == hearth.QualityCommError && answered && !seen {
				continue
			}
			age := now.Sub(last.Time)
			pr := diag.PointReport{Device: d.cfg.Name, Name: name, Quality: p.Quality, Unit: diag.UnitOf(name),
				Time: last.Time, AgeS: age.Seconds(), Stale: age > a.cfg.Safety.MaxReadingAge.D()}
			if p.Good() {
				v := p.Value
				pr.Value = &v
			} else if lg, ok := a.lastGood.Get(d.cfg.Name, name); ok {
				pr.LastGood, pr.LastGoodTS = &lg.Value, &lg.Time
			}
			out = append(out, pr)
		}
	}
	if !found {
		return nil, fmt.Errorf("no device named %q", device)
	}
	return out, nil
}

// Events returns the events recorded since the agent started.
func (a *Agent) Events(since time.Time, typ string) []diag.EventReport {
	out := []diag.EventReport{}
	for _, e := range a.events.Since(since, typ) {
		out = append(out, diag.EventReport{Time: e.Time, Type: e.Type, Data: e.Data})
	}
	return out
}

// SetMode starts a local lease for field work, through safety like any
// other lease; powerW is the test power of mode power (commissioning's
// sign check), which the controller bounds.
func (a *Agent) SetMode(mode hearth.Mode, powerW *hearth.Watts, d time.Duration) (hearth.Ack, error) {
	if !a.controls() {
		return hearth.Ack{}, diag.ErrNoControl
	}
	return a.ctl.Override(mode, powerW, d)
}

// localModes names the modes a local lease can hold.
func (a *Agent) localModes() []string {
	if !a.controls() {
		return []string{}
	}
	return []string{string(hearth.ModeIdle), string(hearth.ModeAuto), string(hearth.ModePower)}
}

// Config is the config the agent runs with, secrets redacted.
func (a *Agent) Config() (map[string]any, error) { return a.cfg.Redacted() }

// ClearMode ends a local lease.
func (a *Agent) ClearMode() error {
	if !a.controls() {
		return diag.ErrNoControl
	}
	a.ctl.ClearOverride()
	return nil
}

// controls reports whether the agent controls any device.
func (a *Agent) controls() bool {
	for _, d := range a.devices {
		if a.controlled(d) {
			return true
		}
	}
	return false
}

// Links reports every link the agent owns, with the devices on it.
func (a *Agent) Links() []diag.Link {
	var out []diag.Link
	var seen []*drivers.Bus
	for _, d := range a.devices {
		i := slices.Index(seen, d.bus)
		if i < 0 {
			seen = append(seen, d.bus)
			out = append(out, diag.Link{Transport: d.cfg.Transport, Address: d.cfg.Address, Bus: d.bus})
			i = len(out) - 1
		}
		out[i].Devices = append(out[i].Devices, diag.LinkDevice{Name: d.cfg.Name, Unit: d.cfg.UnitID})
	}
	return out
}

// ReconnectUplink makes the uplink attempt to connect now.
func (a *Agent) ReconnectUplink() bool { return a.up.Reconnect() }

// birth is the status record the uplink publishes, retained.
func (a *Agent) birth() uplink.Birth {
	// The limits are per device, beside those of the whole site: the cloud
	// must not take a device's limit for the site's.
	s := a.cfg.Safety
	controlled := 0
	for _, d := range a.devices {
		if a.controlled(d) {
			controlled++
		}
	}
	site := map[string]any{"controlled_devices": controlled}
	for k, v := range map[string]*float64{"export_limit_w": s.ExportLimitW, "import_limit_w": s.ImportLimitW,
		"max_discharge_w": s.SiteMaxDischargeW, "max_charge_w": s.SiteMaxChargeW} {
		if v != nil {
			site[k] = *v
		}
	}
	b := uplink.Birth{Version: hearth.Version, Profile: a.profiles(), Limits: map[string]any{
		"per_device": map[string]any{
			"soc_min_pct": s.SocMinPct, "soc_max_pct": s.SocMaxPct,
			"max_charge_w": s.MaxChargeW, "max_discharge_w": s.MaxDischargeW,
		},
		"site": site,
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

// ProbeDevice makes the device's link ask it at once, when it is marked
// down, and returns its report once a poll has run since (or after two
// poll intervals and a few timeouts).
func (a *Agent) ProbeDevice(name string) (diag.ProbeResult, error) {
	for _, d := range a.devices {
		if d.cfg.Name != name {
			continue
		}
		wait := min(2*d.cfg.PollInterval.D()+4*d.cfg.Timeout.D(), 30*time.Second)
		before := d.poller.Stats().Polls
		res := diag.ProbeResult{WasDown: d.bus.ProbeNow(uint8(d.cfg.UnitID))}
		deadline := time.Now().Add(wait)
		for d.poller.Stats().Polls <= before && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		res.Device = d.report()
		return res, nil
	}
	return diag.ProbeResult{}, fmt.Errorf("no device named %q", name)
}
