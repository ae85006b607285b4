package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-energy/hearth/agent"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers"
)

// deviceProbe is what an online check found of one configured device.
type deviceProbe struct {
	Name      string            `json:"name"`
	Transport string            `json:"transport"`
	Address   string            `json:"address"`
	Unit      int               `json:"unit_id"`
	Profile   string            `json:"profile"`
	Via       string            `json:"via"` // "direct", or "agent" when the running agent owns the link
	OK        bool              `json:"ok"`
	SunSpec   bool              `json:"sunspec"`
	Models    []int             `json:"models,omitempty"`
	Identity  *drivers.Identity `json:"identity,omitempty"`
	Error     string            `json:"error,omitempty"`
	Cause     string            `json:"cause,omitempty"`
	Hint      string            `json:"hint,omitempty"`
	// Read are the points of a fixed-map profile as read once (direct
	// probes only), and Control what its control section needs: ready,
	// read-only, allow_unguarded_control, or the setting to change (for
	// a SunSpec battery, only a model 802 LocRemCtl that reads LOCAL).
	Read    map[string]float64 `json:"read,omitempty"`
	Control string             `json:"control,omitempty"`
}

// onlineResult is the online part of `hearth config check --online`.
type onlineResult struct {
	OK      bool              `json:"ok"`
	Devices []deviceProbe     `json:"devices"`
	Broker  agent.BrokerProbe `json:"broker"`
}

// checkOnline probes every device of cfg and its broker, reading only:
// one identification scan of each device's unit, and a broker session of
// its own (agent.ProbeBroker). When an agent runs on the config's socket,
// the devices on links it owns are asked through it, so that its links
// keep a single master; the others, which a config being prepared may
// add, are asked directly.
func checkOnline(ctx context.Context, cfg *config.Config) onlineResult {
	res := onlineResult{Devices: probeDevices(ctx, cfg)}
	res.Broker = agent.ProbeBroker(ctx, cfg)
	res.OK = res.Broker.OK
	for _, d := range res.Devices {
		res.OK = res.OK && d.OK
	}
	return res
}

func probeDevices(ctx context.Context, cfg *config.Config) []deviceProbe {
	c := diag.NewClient(cfg.DiagSocket)
	var st diag.StatusReport
	viaAgent := c.Do("GET", "/status", nil, nil, &st) == nil
	buses := map[string]*drivers.Bus{}
	defer func() {
		for _, b := range buses {
			b.Close()
		}
	}()
	var out []deviceProbe
	for _, dc := range cfg.Devices {
		p := deviceProbe{Name: dc.Name, Transport: dc.Transport, Address: dc.Address, Unit: dc.UnitID, Profile: dc.Profile, Via: "direct"}
		var found []drivers.ScanResult
		var err error
		timeout := max(dc.Timeout.D(), 300*time.Millisecond)
		if target, owned := agentTarget(st, dc); viaAgent && owned {
			p.Via = "agent"
			var r diag.ModbusScanResult
			sc := c.WithTimeout(diag.RequestTimeout + timeout)
			err = sc.Do("POST", "/modbus/scan", nil, diag.ModbusScanRequest{ModbusTarget: target,
				Units: []int{dc.UnitID}, Timeout: min(timeout, 5*time.Second).String()}, &r)
			found = r.Units
			if err == nil && len(found) == 0 {
				err = drivers.ErrTimeout
				if i := slices.IndexFunc(st.Devices, func(d diag.DeviceReport) bool { return d.Name == dc.Name }); i >= 0 && st.Devices[i].LastError != "" {
					p.Error, p.Cause, p.Hint = st.Devices[i].LastError, st.Devices[i].Cause, st.Devices[i].Hint
				}
			}
		} else {
			bus, ok := buses[dc.LinkKey()]
			if !ok {
				lc := dc.Link()
				lc.DownAfter = 1 << 30 // report what the link does, no back-off
				if bus, err = drivers.OpenBus(lc); err == nil {
					buses[dc.LinkKey()] = bus
				}
			}
			if err == nil {
				found, err = scanLink(ctx, bus, dc.Transport, dc.Address, []uint8{uint8(dc.UnitID)}, timeout, false, nil, nil)
			}
			if pr := dc.RegisterMap(); err == nil && len(found) == 1 && pr != nil && pr.Discovery == "" {
				probeProfile(ctx, bus, dc, pr, &p)
			}
		}
		switch {
		case len(found) == 1:
			f := found[0]
			p.SunSpec, p.Identity = f.SunSpec, f.Identity
			for _, m := range f.Models {
				p.Models = append(p.Models, int(m.ID))
			}
			p.OK = (f.SunSpec || dc.Profile != "sunspec") && p.Error == ""
			if f.LocalControl && slices.ContainsFunc(f.Models, func(m drivers.ModelInstance) bool { return m.ID == 124 }) {
				// It answers, but would not follow a model 124 command
				// (LocRemCtl 1: LOCAL).
				p.Control = "NOT READY: " + drivers.LocalControlError(1).Error()
			}
			if !p.OK && p.Error == "" {
				p.Error = cmp.Or(f.Error, "no SunSpec marker at 40000, 0 or 50000")
				p.Hint = fmt.Sprintf("unit %d answers but does not speak SunSpec: name its profile (profile: in the device's section; hearth modbus read to look at its registers)", dc.UnitID)
			}
		case p.Error == "":
			if err == nil {
				err = drivers.ErrTimeout
			}
			p.Error = err.Error()
			p.Cause, p.Hint = diag.DeviceCause(err, dc.Transport, dc.Address, dc.UnitID)
		}
		out = append(out, p)
	}
	return out
}

// agentTarget says whether the running agent, as st reports it, owns the
// link of dc, and how to name that link to it: by the device's name when
// the agent runs the same device, else by the address of its device on
// that link.
func agentTarget(st diag.StatusReport, dc config.DeviceConfig) (diag.ModbusTarget, bool) {
	owned := false
	for _, d := range st.Devices {
		if d.Address != dc.Address || d.Transport != dc.Transport {
			continue
		}
		if d.Name == dc.Name {
			return diag.ModbusTarget{Device: dc.Name}, true
		}
		owned = true
	}
	return diag.ModbusTarget{Address: dc.Address, Transport: dc.Transport}, owned
}

// renderOnline prints an online check: a line per device and per broker
// step, then a summary.
func renderOnline(w io.Writer, r onlineResult) {
	fmt.Fprintln(w, "online:")
	okDevices := 0
	for _, d := range r.Devices {
		link := fmt.Sprintf("%s %s unit %d", d.Transport, d.Address, d.Unit)
		if !d.OK {
			fmt.Fprintf(w, "  device %s (%s, via %s): FAILED: %s\n", d.Name, link, d.Via, d.Error)
			if d.Hint != "" && d.Hint != d.Error {
				fmt.Fprintf(w, "    %s\n", d.Hint)
			}
			continue
		}
		okDevices++
		what := "answers"
		if d.SunSpec {
			ids := make([]string, len(d.Models))
			for i, m := range d.Models {
				ids[i] = strconv.Itoa(m)
			}
			what = "SunSpec, models " + strings.Join(ids, ",")
		}
		if len(d.Read) > 0 {
			what = "profile " + d.Profile + ":"
			for _, n := range []string{"power_w", "soc_pct", "grid_power_w"} {
				if v, ok := d.Read[n]; ok {
					what += fmt.Sprintf(" %s %g", n, v)
				}
			}
		}
		if d.Control != "" {
			what += "; control: " + d.Control
		}
		if id := d.Identity; id != nil {
			what += fmt.Sprintf("; %s %s, serial %s, firmware %s", id.Manufacturer, id.Model, id.Serial, id.Firmware)
		}
		fmt.Fprintf(w, "  device %s (%s, via %s): ok, %s\n", d.Name, link, d.Via, what)
	}
	for _, st := range r.Broker.Steps {
		mark := "ok"
		if !st.OK {
			mark = "FAILED"
		}
		fmt.Fprintf(w, "  broker %s: %s: %s\n", st.Name, mark, st.Detail)
		if !st.OK && st.Hint != "" {
			fmt.Fprintf(w, "    %s\n", st.Hint)
		}
	}
	broker := "broker ok"
	if !r.Broker.OK {
		broker = "broker FAILED"
	}
	fmt.Fprintf(w, "online: %d of %d devices answered; %s (%s)\n", okDevices, len(r.Devices), broker, r.Broker.Broker)
}

// probeProfile reads a fixed-map device's points once, and what its
// control section needs, into p: a unit that does not answer as its
// profile fails the probe.
func probeProfile(ctx context.Context, bus *drivers.Bus, dc config.DeviceConfig, pr *drivers.Profile, p *deviceProbe) {
	read, notReady, err := drivers.ProbeProfile(ctx, bus, uint8(dc.UnitID), pr)
	p.Read = read
	switch {
	case err != nil:
		p.Error = err.Error()
		p.Hint = fmt.Sprintf("unit %d answers, but not as profile %s: check the profile, the unit id and the word order (hearth modbus read to look at its registers)", dc.UnitID, pr.Name)
		return
	case pr.Control == nil:
		p.Control = "read-only profile"
	case notReady != nil:
		p.Control = "NOT READY: " + notReady.Error()
	case !pr.Control.Guarded() && !dc.AllowUnguardedControl:
		p.Control = "read only: no device-side timeout, and allow_unguarded_control is not set"
	default:
		p.Control = "ready"
	}
}
