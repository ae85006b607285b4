package web

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// TestHistoryMeansPerMinute feeds two batteries and a meter over three
// minutes and expects per-minute means: SoC averaged over the batteries,
// battery and PV power summed, grid power the meter's alone, and minutes
// older than the window forgotten.
func TestHistoryMeansPerMinute(t *testing.T) {
	t.Parallel()
	h := NewHistory("meter", "grid_power_w", nil)
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	add := func(dev string, at time.Duration, pts map[string]float64) {
		r := hearth.Reading{Device: dev, Time: t0.Add(at), Clock: hearth.ClockSynced, Points: map[string]hearth.Point{}}
		for k, v := range pts {
			r.Points[k] = hearth.V(v)
		}
		h.Add(r)
	}
	// Minute 0: battery a charges at 1000 then 2000 W (mean -1500), b
	// discharges 500 W; the meter's own power_w is no battery's.
	add("a", 10*time.Second, map[string]float64{"soc_pct": 40, "power_w": -1000, "dc_power_w": 3000})
	add("a", 40*time.Second, map[string]float64{"soc_pct": 42, "power_w": -2000, "dc_power_w": 3000})
	add("b", 20*time.Second, map[string]float64{"soc_pct": 80, "power_w": 500})
	add("meter", 30*time.Second, map[string]float64{"grid_power_w": 700, "power_w": 9999, "soc_pct": 1})
	// Minute 2: only the meter; a reading without a value adds nothing.
	add("meter", 2*time.Minute+5*time.Second, map[string]float64{"grid_power_w": -300})
	h.Add(hearth.Reading{Device: "a", Time: t0.Add(2 * time.Minute), Clock: hearth.ClockSynced,
		Points: map[string]hearth.Point{"soc_pct": hearth.Q(hearth.QualityCommError)}})

	rep := h.Report(t0.Add(-time.Hour), t0.Add(5*time.Minute))
	if len(rep.Minute) != 2 || rep.Minute[0] != t0.UnixMilli() || rep.Minute[1] != t0.Add(2*time.Minute).UnixMilli() {
		t.Fatalf("minutes %v, want the two with data", rep.Minute)
	}
	want := map[string][2]*float64{
		"soc_pct":   {ptr(60.5), nil},  // (41 + 80) / 2
		"battery_w": {ptr(-1000), nil}, // -1500 + 500
		"pv_w":      {ptr(3000), nil},
		"grid_w":    {ptr(700), ptr(-300)},
	}
	for name, w := range want {
		got := rep.Series[name]
		if len(got) != 2 {
			t.Errorf("%s: %d values, want 2", name, len(got))
			continue
		}
		for i := range 2 {
			if (got[i] == nil) != (w[i] == nil) || (got[i] != nil && *got[i] != *w[i]) {
				t.Errorf("%s minute %d: got %v, want %v", name, i, show(got[i]), show(w[i]))
			}
		}
	}

	// A reading a day later pushes the old minutes out of the window.
	add("a", 25*time.Hour, map[string]float64{"soc_pct": 50})
	if rep := h.Report(t0.Add(-48*time.Hour), t0.Add(26*time.Hour)); len(rep.Minute) != 1 {
		t.Errorf("after a day: minutes %v, want only the newest", rep.Minute)
	}
}

func ptr(v float64) *float64 { return &v }

func show(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestHistoryBoundedThroughClockSteps: the wall clock steps a year ahead
// (an NTP sync from a wrong server) for a few minutes, then back, and the
// gateway runs on for three days, a reading a minute. Placed by their own
// times, the minutes a year ahead would anchor the window for a year and
// nothing after the step back would ever be trimmed; on the injected
// monotonic clock they age out, and the history keeps at most a window's
// worth of minutes throughout, with the last day's plots whole.
func TestHistoryBoundedThroughClockSteps(t *testing.T) {
	t.Parallel()
	var mono time.Duration
	h := NewHistory("", "", func() time.Duration { return mono })
	wall := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	add := func(at time.Time) {
		h.Add(hearth.Reading{Device: "battery", Time: at, Clock: hearth.ClockSynced,
			Points: map[string]hearth.Point{"soc_pct": hearth.V(50)}})
	}
	most := 0
	tick := func(at time.Time) {
		mono += time.Minute
		add(at)
		h.mu.Lock()
		most = max(most, len(h.minutes))
		h.mu.Unlock()
	}
	for range 10 {
		wall = wall.Add(time.Minute)
		tick(wall)
	}
	ahead := wall.AddDate(1, 0, 0)
	for range 5 {
		ahead = ahead.Add(time.Minute)
		tick(ahead)
	}
	for range 3 * 24 * 60 {
		wall = wall.Add(time.Minute)
		tick(wall)
	}
	if most > maxMinutes {
		t.Errorf("held up to %d minutes, want at most %d (a window's worth)", most, maxMinutes)
	}
	rep := h.Report(wall.Add(-HistoryWindow), wall)
	if n := len(rep.Minute); n < int(HistoryWindow/time.Minute) || rep.Minute[n-1] != wall.Truncate(time.Minute).UnixMilli() {
		t.Errorf("the last day's plots: %d minutes, the last %v; want a day's worth up to %v", n, time.UnixMilli(rep.Minute[max(n-1, 0)]).UTC(), wall)
	}
	h.mu.Lock()
	for m := range h.minutes {
		if m > wall.Unix()/60 {
			t.Errorf("minute %v, from the clock that stepped ahead, still kept after three days", time.Unix(m*60, 0).UTC())
			break
		}
	}
	h.mu.Unlock()
}
