package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/agent"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers"
)

// Verdicts of a commissioning check, and of the whole report.
const (
	verdictPass       = "pass"
	verdictWarn       = "warn"    // works, but look at it
	verdictFail       = "fail"    // must be fixed before the gateway is left
	verdictBlocked    = "blocked" // could not be checked here and now
	verdictSkipped    = "skipped" // not asked for
	reportPass        = "PASS"
	reportIncomplete  = "INCOMPLETE"
	reportFail        = "FAIL"
	defaultTestPowerW = 500
)

// commissionCheck is one check of the commissioning report.
type commissionCheck struct {
	Name    string `json:"name"`
	Verdict string `json:"verdict"`
	Detail  string `json:"detail"`
	Hint    string `json:"hint,omitempty"`
}

// commissionDevice is a device as the report records it.
type commissionDevice struct {
	Name      string `json:"name"`
	Transport string `json:"transport"`
	Address   string `json:"address"`
	Unit      int    `json:"unit_id"`
	Up        bool   `json:"up"`
	diag.Identity
	Models []int `json:"models,omitempty"`
}

// commissionReport is what `hearth commission` found: the record an
// installer keeps (--out FILE), in text or JSON.
type commissionReport struct {
	Gateway string             `json:"gateway_id"`
	Version string             `json:"agent_version"`
	Time    time.Time          `json:"ts"`
	Clock   hearth.ClockState  `json:"clock"`
	Devices []commissionDevice `json:"devices"`
	Limits  map[string]any     `json:"limits"`
	Checks  []commissionCheck  `json:"checks"`
	// Verdict is PASS (every check passed or warned), INCOMPLETE (none
	// failed, some could not run) or FAIL.
	Verdict string `json:"verdict"`
}

func (r *commissionReport) add(c commissionCheck) { r.Checks = append(r.Checks, c) }

const commissionUsage = `usage: hearth commission [--test-power 500W] [--for 2m] [--skip-sign] [--no-broker-probe]
                         [--out FILE] [--json] [--socket PATH] [--config FILE]

Checks a freshly installed gateway through its running agent: every device
answers and says who it is, its readings are plausible, the battery follows
a small local test power with the right sign (and the meter sees it, when
there is one), and the uplink works; then prints a report with serials,
firmware, limits and a verdict. --out FILE keeps it (JSON when FILE ends in
.json). Exit 0: PASS; 1: FAIL or INCOMPLETE.
`

// cmdCommission is `hearth commission`.
func cmdCommission(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth commission", stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), commissionUsage, "\nflags:\n"); fs.PrintDefaults() }
	var f diagFlags
	f.register(fs)
	power := fs.String("test-power", fmt.Sprintf("%dW", defaultTestPowerW), "magnitude of the test power; the battery charges with it, or discharges when full")
	hold := fs.Duration("for", 2*time.Minute, "how long the test power may hold at most (it ends as soon as the check is done)")
	skipSign := fs.Bool("skip-sign", false, "do not command the test power")
	noProbe := fs.Bool("no-broker-probe", false, "check the uplink by the agent's session only, without a probe session of --config's")
	out := fs.String("out", "", "also write the report to this file (JSON when it ends in .json)")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	w, err := parseWatts(*power)
	if err != nil || w == 0 {
		fmt.Fprintf(stderr, "hearth commission: --test-power %q: want a power such as 500W\n", *power)
		return exitUsage
	}
	c := diag.NewClient(f.socketPath())
	var st diag.StatusReport
	if err := c.Do("GET", "/status", nil, nil, &st); err != nil {
		return fail(stderr, "commission", err)
	}
	ctx, cancel := signalContext()
	defer cancel()
	cm := commissioner{c: c, st: st, testW: hearth.Watts(math.Abs(float64(w))), hold: *hold, progress: stderr}
	r := cm.run(ctx, !*skipSign)
	if !*noProbe {
		cm.probeBroker(ctx, &r, f.config)
	}
	r.Verdict = verdictOf(r.Checks)
	var text strings.Builder
	renderCommission(&text, r)
	if f.json {
		writeJSON(stdout, r)
	} else {
		fmt.Fprint(stdout, text.String())
	}
	if *out != "" {
		data := []byte(text.String())
		if strings.HasSuffix(*out, ".json") {
			data, _ = json.MarshalIndent(r, "", "  ")
			data = append(data, '\n')
		}
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			fmt.Fprintln(stderr, "hearth commission: keep the report:", err)
			return exitFailed
		}
		fmt.Fprintf(stderr, "report written to %s\n", *out)
	}
	if r.Verdict != reportPass {
		return exitFailed
	}
	return exitOK
}

// commissioner runs the checks against one agent.
type commissioner struct {
	c        *diag.Client
	st       diag.StatusReport
	testW    hearth.Watts
	hold     time.Duration
	progress io.Writer
}

func (cm *commissioner) run(ctx context.Context, sign bool) commissionReport {
	st := cm.st
	r := commissionReport{Gateway: st.Agent.GatewayID, Version: st.Agent.Version, Time: st.Time, Clock: st.Agent.Clock,
		Devices: []commissionDevice{}, Limits: map[string]any{}}
	var cfg map[string]any
	if err := cm.c.Do("GET", "/config", nil, nil, &cfg); err == nil {
		if s, ok := cfg["safety"].(map[string]any); ok {
			r.Limits = s
		}
	}
	if st.Agent.Clock != hearth.ClockSynced {
		r.add(commissionCheck{Name: "clock", Verdict: verdictWarn, Detail: "the clock is not synchronised: readings carry unsynced times",
			Hint: "check NTP (timedatectl); the cloud orders such readings by boot and mono_ms"})
	}
	for _, d := range st.Devices {
		cd := commissionDevice{Name: d.Name, Transport: d.Transport, Address: d.Address, Unit: d.UnitID, Up: d.Up}
		if d.Identity != nil {
			cd.Identity = *d.Identity
		}
		var scan diag.ModbusScanResult
		req := diag.ModbusScanRequest{ModbusTarget: diag.ModbusTarget{Device: d.Name}, Units: []int{d.UnitID}, Timeout: "1s"}
		if cm.c.WithTimeout(diag.RequestTimeout+time.Second).Do("POST", "/modbus/scan", nil, req, &scan) == nil && len(scan.Units) == 1 {
			for _, m := range scan.Units[0].Models {
				cd.Models = append(cd.Models, int(m.ID))
			}
		}
		r.Devices = append(r.Devices, cd)
		ck := commissionCheck{Name: d.Name + " answers", Verdict: verdictPass}
		switch {
		case !d.Up:
			ck.Verdict, ck.Detail, ck.Hint = verdictFail, cmp.Or(d.LastError, "no good poll yet"), d.Hint
		case d.Identity == nil || d.Identity.Serial == "":
			ck.Verdict, ck.Detail = verdictWarn, "answers, but gives no serial number (a profile device, or an incomplete SunSpec model 1)"
		default:
			ck.Detail = fmt.Sprintf("%s %s, serial %s, firmware %s", d.Identity.Manufacturer, d.Identity.Model, d.Identity.Serial, d.Identity.Firmware)
			if len(cd.Models) > 0 {
				ck.Detail += ", SunSpec models " + joinInts(cd.Models)
			}
		}
		r.add(ck)
	}
	var pts []diag.PointReport
	if err := cm.c.Do("GET", "/points", nil, nil, &pts); err != nil {
		r.add(commissionCheck{Name: "readings", Verdict: verdictFail, Detail: err.Error()})
		return r
	}
	for _, d := range st.Devices {
		r.add(plausible(d.Name, pointsOf(pts, d.Name), r.Limits))
	}
	if sign {
		cm.signCheck(ctx, &r, pts)
	} else {
		r.add(commissionCheck{Name: "sign", Verdict: verdictSkipped, Detail: "--skip-sign: no test power commanded"})
	}
	r.add(uplinkCheck(st.Uplink))
	return r
}

// pointsOf returns the good values of a device's points, by name, and the
// qualities of the others.
func pointsOf(pts []diag.PointReport, device string) map[string]diag.PointReport {
	m := map[string]diag.PointReport{}
	for _, p := range pts {
		if p.Device == device {
			m[p.Name] = p
		}
	}
	return m
}

// limit reads a number from the config's safety section.
func limit(l map[string]any, key string, def float64) float64 {
	switch v := l[key].(type) {
	case float64:
		return v
	case int:
		return float64(v)
	}
	return def
}

// plausible checks one device's latest readings against physics and the
// configured limits: values a real battery, inverter and grid can have.
func plausible(device string, p map[string]diag.PointReport, lim map[string]any) commissionCheck {
	ck := commissionCheck{Name: device + " readings plausible", Verdict: verdictPass}
	var shown, bad, odd []string
	val := func(name string) (float64, bool) {
		pt, ok := p[name]
		if !ok || pt.Value == nil {
			if ok && pt.Quality == hearth.QualityCommError {
				bad = append(bad, name+" ["+string(pt.Quality)+"]")
			}
			return 0, false
		}
		return *pt.Value, true
	}
	rng := func(name, unit string, lo, hi float64, warnLo, warnHi float64, why string) {
		v, ok := val(name)
		if !ok {
			return
		}
		shown = append(shown, fmt.Sprintf("%s %s%s", name, number(v), unit))
		switch {
		case v < lo || v > hi:
			bad = append(bad, fmt.Sprintf("%s %s%s outside %s–%s", name, number(v), unit, number(lo), number(hi)))
		case v < warnLo || v > warnHi:
			odd = append(odd, fmt.Sprintf("%s %s%s %s", name, number(v), unit, why))
		}
	}
	maxW := max(limit(lim, "max_charge_w", 2500), limit(lim, "max_discharge_w", 2500))
	rng("soc_pct", " %", 0, 100, limit(lim, "soc_min_pct", 10)-5, limit(lim, "soc_max_pct", 95)+5, "outside the configured SoC window")
	rng("soh_pct", " %", 0, 100, 50, 100, "(a worn battery)")
	rng("power_w", " W", -2*maxW-1000, 2*maxW+1000, -1e12, 1e12, "")
	rng("ac_hz", " Hz", 45, 65, 49, 61, "off the grid's 50/60 Hz")
	rng("ac_v", " V", 90, 280, 100, 260, "off a 120/230 V grid")
	rng("cell_v_min", " V", 1.5, 5, limit(lim, "cell_v_min", 2.8), limit(lim, "cell_v_max", 3.65), "outside the configured cell window: safety will hold the battery")
	rng("cell_v_max", " V", 1.5, 5, limit(lim, "cell_v_min", 2.8), limit(lim, "cell_v_max", 3.65), "outside the configured cell window: safety will hold the battery")
	rng("temp_c", " °C", -40, 90, limit(lim, "temp_c_min", 0), limit(lim, "temp_c_max", 50), "outside the configured temperature window")
	if lo, ok1 := val("cell_v_min"); ok1 {
		if hi, ok2 := val("cell_v_max"); ok2 && lo > hi {
			bad = append(bad, "cell_v_min above cell_v_max: the two registers are swapped or scaled differently")
		}
	}
	if _, ok := p["soc_pct"]; !ok && len(p) > 0 && p["power_w"].Name != "" {
		bad = append(bad, "power_w without soc_pct: safety cannot keep the SoC window")
	}
	switch {
	case len(p) == 0:
		ck.Verdict, ck.Detail = verdictFail, "no readings yet"
	case len(bad) > 0:
		ck.Verdict, ck.Detail = verdictFail, strings.Join(bad, "; ")
		ck.Hint = "compare with the device's own display; a value off by a power of ten is a scale factor, a wrong sign a register map"
	case len(odd) > 0:
		ck.Verdict, ck.Detail = verdictWarn, strings.Join(odd, "; ")
	default:
		ck.Detail = strings.Join(shown, ", ")
		if ck.Detail == "" {
			ck.Detail = fmt.Sprintf("%d points, none with a physical check", len(p))
		}
	}
	return ck
}

// signCheck commands a small local test power through safety and checks
// that every battery's power_w follows the share it holds, with the right
// sign (positive discharges), each judged on its own readings; then that
// the meter, if any, sees the site's grid power move the other way. Each
// battery gets a row of the report.
func (cm *commissioner) signCheck(ctx context.Context, r *commissionReport, pts []diag.PointReport) {
	if !slices.Contains(cm.st.Agent.LocalModes, string(hearth.ModePower)) {
		r.add(commissionCheck{Name: "sign", Verdict: verdictBlocked,
			Detail: "this agent controls no device (no SunSpec storage controls, no profile control section it may use): it cannot hold a local test power",
			Hint:   "check the sign with a small setpoint from the cloud instead (hearthsim cloud send --mode power --power -500 --for 2m)"})
		return
	}
	meter, _ := r.Limits["meter_device"].(string)
	meterPoint, _ := r.Limits["meter_point"].(string)
	// Every device with a battery power and SoC is tested, but the meter.
	var devs []string
	var socMin, socMax float64 = 101, -1
	for _, d := range cm.st.Devices {
		p := pointsOf(pts, d.Name)
		if s, ok := p["soc_pct"]; ok && s.Value != nil && p["power_w"].Value != nil && d.Name != meter {
			devs = append(devs, d.Name)
			socMin, socMax = min(socMin, *s.Value), max(socMax, *s.Value)
		}
	}
	if len(devs) == 0 {
		r.add(commissionCheck{Name: "sign", Verdict: verdictBlocked, Detail: "no device reports soc_pct and power_w"})
		return
	}
	target := -cm.testW // charge, unless a battery is full
	if socMax >= limit(r.Limits, "soc_max_pct", 95)-2 {
		target = cm.testW
	}
	if socMin <= limit(r.Limits, "soc_min_pct", 10)+2 && target > 0 {
		r.add(commissionCheck{Name: "sign", Verdict: verdictBlocked,
			Detail: fmt.Sprintf("SoC %s–%s %% leaves no room to charge or discharge", number(socMin), number(socMax))})
		return
	}
	gridBefore, haveGrid := cm.point(meter, meterPoint)
	req := diag.ModeRequest{Mode: hearth.ModePower, For: cm.hold.String(), PowerW: &target}
	// The test power ends at the latest cm.hold after it was asked for:
	// a reading after that is the device back on its own logic.
	ends := time.Now().Add(cm.hold)
	ack, err := setMode(cm.c, req)
	if err != nil {
		r.add(commissionCheck{Name: "sign", Verdict: verdictFail, Detail: "hearth mode set power: " + err.Error()})
		return
	}
	defer cm.c.Do("DELETE", "/mode", nil, nil, nil) // hand back whatever happens
	if ack.Result != hearth.ResultApplied && ack.Result != hearth.ResultClamped {
		r.add(commissionCheck{Name: "sign", Verdict: verdictFail, Detail: fmt.Sprintf("the test power was %s (%s)", ack.Result, ack.Reason),
			Hint: "safety refused it: see hearth status and hearth events"})
		return
	}
	fmt.Fprintf(cm.progress, "commission: holding %s on %s for the sign check…\n", watts(float64(target)), strings.Join(devs, ", "))
	rows := cm.followCheck(ctx, devs, target, ends)
	passed := true
	for _, ck := range rows {
		r.add(ck)
		passed = passed && ck.Verdict == verdictPass
	}
	if passed && haveGrid {
		cm.meterCheck(r, meter, meterPoint, gridBefore, target)
	}
}

// signTest is one battery's part of the sign check.
type signTest struct {
	ck     commissionCheck
	heldAt time.Time    // when the agent first reported it holding its share
	heldW  hearth.Watts // that share
	last   *float64     // its latest power_w after heldAt
	done   bool
}

// followCheck waits, up to the hold, until every device under test
// reports a power_w, taken after it held its share of target, that
// follows that share or is its opposite; it returns one row per device.
// Readings taken after ends, when the test power has lapsed, are not
// judged: the device is back on its own logic then.
func (cm *commissioner) followCheck(ctx context.Context, devs []string, target hearth.Watts, ends time.Time) []commissionCheck {
	begun := time.Now()
	deadline := begun.Add(min(cm.hold, 45*time.Second))
	if ends.Before(deadline) {
		deadline = ends
	}
	tests := map[string]*signTest{}
	for _, d := range devs {
		tests[d] = &signTest{ck: commissionCheck{Name: "sign: " + d}}
	}
	rows := func() []commissionCheck {
		out := make([]commissionCheck, len(devs))
		for i, d := range devs {
			out[i] = tests[d].ck
		}
		return out
	}
	tripped := map[string]bool{} // trips already holding before the test
	for _, t := range cm.st.Safety.Trips {
		tripped[t] = true
	}
	for left := len(devs); left > 0 && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(500 * time.Millisecond)
		var st diag.StatusReport
		if cm.c.Do("GET", "/status", nil, nil, &st) == nil {
			// The agent's own plausibility checks may see a device
			// contradict itself before a reading of the held power
			// arrives; safety then holds it at 0 W, and that trip is
			// the answer.
			if rule := newTrip(st.Safety.Trips, tripped); rule != "" {
				// The trip event names the device (the first one since
				// the test began) and what tripped (the latest).
				var on, detail string
				if evs := cm.eventsSince("trip", "rule", rule, begun); len(evs) > 0 {
					on, _ = evs[0]["device"].(string)
					detail, _ = evs[len(evs)-1]["detail"].(string)
				}
				for _, d := range devs {
					t := tests[d]
					switch {
					case t.done:
					case on == "" || on == d:
						tripVerdict(&t.ck, rule, detail, target)
					default:
						t.ck.Verdict = verdictBlocked
						t.ck.Detail = fmt.Sprintf("safety tripped %s on %s and ended the test before %s was judged", rule, on, d)
						t.ck.Hint = "fix " + on + ", then run hearth commission again"
					}
				}
				return rows()
			}
			siteHeld := st.Safety.AppliedW != nil && math.Abs(float64(*st.Safety.AppliedW-target)) < 1
			if !siteHeld && st.Safety.AppliedW != nil {
				siteHeld = othersHeld(st, tests, target, cm.localControl)
			}
			for _, d := range st.Devices {
				t := tests[d.Name]
				if t == nil || !t.heldAt.IsZero() {
					continue
				}
				switch {
				case d.HeldW != nil && siteHeld:
					t.heldAt, t.heldW = time.Now(), *d.HeldW
				case d.HeldW == nil && siteHeld && !slices.ContainsFunc(st.Devices, func(d diag.DeviceReport) bool { return d.HeldW != nil }):
					// An agent that does not report each device's share:
					// safety shares the power equally.
					t.heldAt, t.heldW = time.Now(), target/hearth.Watts(len(devs))
				}
				if !t.heldAt.IsZero() {
					t.ck.Name = fmt.Sprintf("sign: %s follows %s", d.Name, watts(float64(t.heldW)))
				}
			}
		}
		for _, d := range devs {
			t := tests[d]
			if t.done || t.heldAt.IsZero() {
				continue
			}
			v, at, ok := cm.reading(d, "power_w")
			if !ok || !at.After(t.heldAt.Add(time.Second)) || at.After(ends) {
				continue // not a reading of the held command: too early, or after it lapsed
			}
			t.last = &v
			after := time.Since(begun).Round(100 * time.Millisecond)
			want := float64(t.heldW)
			tol := max(100, 0.25*math.Abs(want))
			switch {
			case math.Abs(want) < 1:
				t.ck.Verdict = verdictWarn
				t.ck.Detail = "safety gave it no share of the test power (0 W): its sign is not tested"
				t.ck.Hint = "see hearth status for the limit that holds it, and run hearth commission again once it can charge or discharge"
			case math.Abs(v-want) <= tol:
				t.ck.Verdict = verdictPass
				t.ck.Detail = fmt.Sprintf("commanded %s, power_w %s W after %s", watts(want), number(v), after)
			case math.Abs(v+want) <= tol:
				t.ck.Verdict = verdictFail
				t.ck.Detail = fmt.Sprintf("commanded %s, the device reports power_w %s W after %s", watts(want), number(v), after)
				t.ck.Hint = "the sign is inverted: the device or its register map reports charging as positive; fix the profile before leaving the site"
			default:
				continue
			}
			t.done = true
			left--
		}
	}
	for _, d := range devs {
		t := tests[d]
		if t.done {
			continue
		}
		t.ck.Verdict = verdictFail
		if t.heldAt.IsZero() {
			t.ck.Detail = fmt.Sprintf("commanded %s in all; %s never held its share within %s", watts(float64(target)), d, time.Since(begun).Round(time.Second))
			t.ck.Hint = cmp.Or(cm.localControl(d), "the writes do not take: see hearth status and hearth events (write_failed); is remote control enabled on the inverter?")
			continue
		}
		stayed := "no reading of power_w came"
		if t.last != nil {
			stayed = "power_w stayed at " + number(*t.last) + " W"
		}
		t.ck.Detail = fmt.Sprintf("commanded %s, held by the device; %s for %s", watts(float64(t.heldW)), stayed, time.Since(begun).Round(time.Second))
		t.ck.Hint = "the device does not follow: is remote control enabled on the inverter (SunSpec: model 124 StorCtl_Mod; a vendor profile: its installer steps in docs/devices.md)? Compare power_w with the device's own display"
		if detail := cm.notEffective(d, begun); detail != "" {
			t.ck.Hint += "; the agent reported it not effective: " + detail
		}
		if local := cm.localControl(d); local != "" {
			t.ck.Hint = local
		}
	}
	return rows()
}

// othersHeld reports whether, with some batteries under test under local
// control (local says so by its hint) and written nothing, the others
// hold the test power's equal shares (safety shares it equally): then
// they are judged all the same, on the shares they hold. Before their
// ramp ends, or when their shares are not equal ones, they are not.
func othersHeld(st diag.StatusReport, tests map[string]*signTest, target hearth.Watts, local func(string) string) bool {
	var sum hearth.Watts
	locals, holding := 0, 0
	for _, d := range st.Devices {
		switch {
		case tests[d.Name] == nil:
		case d.HeldW != nil:
			sum += *d.HeldW
			holding++
		case local(d.Name) != "":
			locals++
		default:
			return false // neither holds nor is under local control
		}
	}
	share := float64(target) / float64(locals+holding)
	return locals > 0 && holding > 0 && math.Abs(float64(sum)-share*float64(holding)) < float64(holding)
}

// localControl returns the hint for a device whose latest reading says
// it is under local control (SunSpec model 802 LocRemCtl LOCAL): it runs
// its own logic whatever it is commanded, and the agent writes it
// nothing. "" when it does not say so.
func (cm *commissioner) localControl(device string) string {
	if v, _, ok := cm.reading(device, drivers.LocalControlPoint); ok && v == 1 {
		return "the battery is under local control (local_control 1: LocRemCtl reads LOCAL) and runs its own logic, so nothing is written to it: " +
			drivers.LocalControlHint + ", then run hearth commission again"
	}
	return ""
}

// notEffective returns what the agent's not_effective event for device
// since begun says, "" when there is none.
func (cm *commissioner) notEffective(device string, begun time.Time) string {
	evs := cm.eventsSince("not_effective", "device", device, begun)
	if len(evs) == 0 {
		return ""
	}
	e := evs[0]
	why, _ := e["reason"].(string)
	detail := "by its " + cmp.Or(why, "read-back")
	if want, ok := e["want_w"].(float64); ok {
		if got, ok := e["got_w"].(float64); ok {
			detail += fmt.Sprintf(" (wanted %s W, got %s W)", number(want), number(got))
		}
	}
	return detail
}

// eventsSince returns the data of the agent's events of type typ whose
// key is value, from a second before begun on, in the order the agent
// lists them; none when the agent cannot say.
func (cm *commissioner) eventsSince(typ, key, value string, begun time.Time) []map[string]any {
	var evs []diag.EventReport
	if cm.c.Do("GET", "/events", map[string][]string{"type": {typ}}, nil, &evs) != nil {
		return nil
	}
	var out []map[string]any
	for _, e := range evs {
		if v, _ := e.Data[key].(string); v == value && !e.Time.Before(begun.Add(-time.Second)) {
			out = append(out, e.Data)
		}
	}
	return out
}

// newTrip returns a trip rule in trips that was not holding before.
func newTrip(trips []string, before map[string]bool) string {
	for _, t := range trips {
		if !before[t] {
			return t
		}
	}
	return ""
}

// tripVerdict fails the sign check on a safety trip during it, with what
// the agent's trip event says (detail).
func tripVerdict(ck *commissionCheck, rule, detail string, target hearth.Watts) {
	ck.Verdict = verdictFail
	ck.Detail = fmt.Sprintf("commanded %s; safety tripped %s and took the test power away", watts(float64(target)), rule)
	if detail != "" {
		ck.Detail += ": " + detail
	}
	if rule == "implausible" { // the rule's name on the wire (docs/events.md)
		// Every plausibility check compares signs: the reported power
		// against V×A, the charge status, or the command it follows.
		ck.Hint = "the sign is inverted: the device or its register map reports charging as positive; fix the profile before leaving the site"
		return
	}
	ck.Hint = "a safety rule stopped the test: see hearth status and hearth events, fix the cause and run hearth commission again"
}

// meterCheck: with the battery charging (or discharging) at target, the
// site's grid power (positive exporting) must have moved by about -target.
func (cm *commissioner) meterCheck(r *commissionReport, meter, point string, before float64, target hearth.Watts) {
	ck := commissionCheck{Name: fmt.Sprintf("meter: %s.%s sees the test power", meter, point)}
	defer func() { r.add(ck) }()
	time.Sleep(2 * time.Second) // a meter may lag the battery by a poll or two
	after, ok := cm.point(meter, point)
	if !ok {
		ck.Verdict, ck.Detail = verdictBlocked, "no reading of the meter"
		return
	}
	moved := after - before
	ck.Detail = fmt.Sprintf("%s went from %s W to %s W while the battery held %s", point, number(before), number(after), watts(float64(target)))
	switch {
	case moved*float64(target) > 0 && math.Abs(moved) > 0.3*math.Abs(float64(target)):
		ck.Verdict = verdictPass
	case math.Abs(moved) > 0.3*math.Abs(float64(target)):
		ck.Verdict = verdictFail
		ck.Hint = "the meter moved the wrong way: its CT is reversed, or the point's sign is (positive must be exporting)"
	default:
		ck.Verdict = verdictWarn
		ck.Hint = "the meter barely moved: is its CT on the grid connection, and on the phase the battery feeds? A changing house load blurs this check"
	}
}

// reading reads one good value of a device's point through the agent,
// with when it was read.
func (cm *commissioner) reading(device, name string) (float64, time.Time, bool) {
	var pts []diag.PointReport
	if cm.c.Do("GET", "/points", map[string][]string{"device": {device}}, nil, &pts) != nil {
		return 0, time.Time{}, false
	}
	for _, p := range pts {
		if p.Name == name && p.Value != nil && !p.Stale {
			return *p.Value, p.Time, true
		}
	}
	return 0, time.Time{}, false
}

// point reads one good value of a device's point through the agent.
func (cm *commissioner) point(device, name string) (float64, bool) {
	if device == "" || name == "" {
		return 0, false
	}
	var pts []diag.PointReport
	if cm.c.Do("GET", "/points", map[string][]string{"device": {device}}, nil, &pts) != nil {
		return 0, false
	}
	for _, p := range pts {
		if p.Name == name && p.Value != nil && !p.Stale {
			return *p.Value, true
		}
	}
	return 0, false
}

// uplinkCheck judges the agent's own MQTT session.
func uplinkCheck(up diag.UplinkReport) commissionCheck {
	ck := commissionCheck{Name: "uplink (the agent's session)"}
	switch {
	case up.Connected && up.Published > 0:
		ck.Verdict = verdictPass
		ck.Detail = fmt.Sprintf("connected to %s, %d messages acknowledged by the broker", up.Broker, up.Published)
	case up.Connected:
		ck.Verdict, ck.Detail = verdictWarn, fmt.Sprintf("connected to %s, nothing acknowledged yet", up.Broker)
	case up.BootDelayUntil != nil:
		ck.Verdict, ck.Detail = verdictFail, "still in the boot delay"
		ck.Hint = "hearth uplink reconnect, then run hearth commission again"
	default:
		ck.Verdict, ck.Detail = verdictFail, fmt.Sprintf("not connected to %s after %d attempts: %s", up.Broker, up.Attempts, up.LastError)
		ck.Hint = "hearth config check --online names the failing step"
	}
	return ck
}

// probeBroker adds the broker probe of the config file, when it can be
// read (certificates included): what the cloud side will see is tested
// too, not only that the agent's session is up.
func (cm *commissioner) probeBroker(ctx context.Context, r *commissionReport, path string) {
	ck := commissionCheck{Name: "broker probe (" + path + ")"}
	cfg, err := config.Load(path)
	if err != nil {
		ck.Verdict, ck.Detail = verdictSkipped, "config not readable here: "+strings.SplitN(err.Error(), "\n", 2)[0]
		ck.Hint = "run with sudo, or pass --config, for the probe; --no-broker-probe to leave it out"
		r.add(ck)
		return
	}
	if cfg.GatewayID != cm.st.Agent.GatewayID {
		ck.Verdict, ck.Detail = verdictSkipped, fmt.Sprintf("%s is gateway %s, the agent runs %s", path, cfg.GatewayID, cm.st.Agent.GatewayID)
		r.add(ck)
		return
	}
	p := agent.ProbeBroker(ctx, cfg)
	var steps []string
	for _, s := range p.Steps {
		if s.OK {
			steps = append(steps, s.Name+" ok")
		} else {
			steps = append(steps, s.Name+" FAILED: "+s.Detail)
			ck.Hint = s.Hint
		}
	}
	ck.Detail = strings.Join(steps, ", ")
	ck.Verdict = verdictPass
	if !p.OK {
		ck.Verdict = verdictFail
	}
	r.add(ck)
}

// verdictOf sums the checks up: FAIL if any failed, INCOMPLETE if any
// could not run, else PASS.
func verdictOf(cs []commissionCheck) string {
	v := reportPass
	for _, c := range cs {
		switch c.Verdict {
		case verdictFail:
			return reportFail
		case verdictBlocked:
			v = reportIncomplete
		}
	}
	return v
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// renderCommission writes the report as an installer reads and keeps it.
func renderCommission(w io.Writer, r commissionReport) {
	fmt.Fprintln(w, "hearth commissioning report")
	fmt.Fprintf(w, "gateway %s · hearth %s · %s · clock %s\n\n", r.Gateway, r.Version, r.Time.UTC().Format("2006-01-02 15:04:05 UTC"), r.Clock)
	tw := table(w)
	fmt.Fprintln(tw, "DEVICE\tLINK\tUNIT\tMANUFACTURER\tMODEL\tSERIAL\tFIRMWARE")
	for _, d := range r.Devices {
		fmt.Fprintf(tw, "%s\t%s %s\t%d\t%s\t%s\t%s\t%s\n", d.Name, d.Transport, d.Address, d.Unit,
			cmp.Or(d.Manufacturer, "-"), cmp.Or(d.Model, "-"), cmp.Or(d.Serial, "-"), cmp.Or(d.Firmware, "-"))
	}
	tw.Flush()
	l := r.Limits
	fmt.Fprintf(w, "\nlimits  SoC %s–%s %%, charge ≤ %s W, discharge ≤ %s W, cells %s–%s V, %s–%s °C, export limit %s, fallback %v\n\n",
		number(limit(l, "soc_min_pct", 0)), number(limit(l, "soc_max_pct", 0)), number(limit(l, "max_charge_w", 0)),
		number(limit(l, "max_discharge_w", 0)), number(limit(l, "cell_v_min", 0)), number(limit(l, "cell_v_max", 0)),
		number(limit(l, "temp_c_min", 0)), number(limit(l, "temp_c_max", 0)), exportLimit(l), l["fallback"])
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-7s %s: %s\n", strings.ToUpper(c.Verdict), c.Name, c.Detail)
		if c.Hint != "" && c.Verdict != verdictPass {
			fmt.Fprintf(w, "        %s\n", c.Hint)
		}
	}
	fmt.Fprintf(w, "\nVERDICT: %s\n", r.Verdict)
}

func exportLimit(l map[string]any) string {
	if _, ok := l["export_limit_w"].(float64); ok {
		return number(limit(l, "export_limit_w", 0)) + " W"
	}
	return "none"
}
