package telemetry

import (
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// TestLastGood keeps each point's last value through readings without
// one, and tells the points a device answered for from those it never
// did.
func TestLastGood(t *testing.T) {
	t.Parallel()
	l := NewLastGood()
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	if _, dev := l.Answered("battery", "soc_pct"); dev {
		t.Error("a device never read has answered")
	}
	l.Observe(hearth.Reading{Device: "battery", Time: t0, Points: map[string]hearth.Point{
		"soc_pct": hearth.V(61), "temp_sink_c": hearth.Q(hearth.QualityNotImplemented)}})
	l.Observe(hearth.Reading{Device: "battery", Time: t0.Add(time.Second), Points: map[string]hearth.Point{
		"soc_pct": hearth.Q(hearth.QualityCommError), "temp_sink_c": hearth.Q(hearth.QualityCommError), "cell_v_max": hearth.Q(hearth.QualityCommError)}})
	if s, ok := l.Get("battery", "soc_pct"); !ok || s.Value != 61 || !s.Time.Equal(t0) {
		t.Errorf("soc_pct last good %+v %v, want 61 at t0", s, ok)
	}
	if _, ok := l.Get("battery", "temp_sink_c"); ok {
		t.Error("temp_sink_c never had a value, yet has a last good one")
	}
	for point, want := range map[string]bool{"soc_pct": true, "temp_sink_c": true, "cell_v_max": false} {
		if seen, dev := l.Answered("battery", point); seen != want || !dev {
			t.Errorf("%s: answered %v (device %v), want %v", point, seen, dev, want)
		}
	}
}
