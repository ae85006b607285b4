package uplink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// TestLeanRoundTrip: whatever readings go in (several devices with their
// own and varying points, qualities, values at the edges of float64, seq
// gaps, a boot change, clock states, a wall clock stepping back) come out
// of DecodeTelemetry exactly, ts at the millisecond the buffer keeps.
func TestLeanRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	edge := []float64{0, math.Copysign(0, -1), 5e-324, math.MaxFloat64, -math.MaxFloat64, 0.1, 1e21, 123456789.123456789, -3000, 3.412}
	qualities := []hearth.Quality{hearth.QualityCommError, hearth.QualityNotImplemented, hearth.QualityOutOfRange, hearth.QualityStale}
	base := time.Date(2026, 11, 25, 10, 0, 1, 123456789, time.UTC)
	var rs []hearth.Reading
	seq, mono := uint64(81234), int64(1234567)
	for i := range 300 {
		seq += 1 + uint64(r.IntN(3)) // gaps: other readings went elsewhere
		mono += int64(r.IntN(1500))
		boot := "9f2c61d04ab3e871"
		if i > 200 {
			boot = "0b3e"
		}
		ts := base.Add(time.Duration(i) * 250 * time.Millisecond)
		if i == 150 {
			base = base.Add(-time.Hour) // the wall clock steps back
		}
		dev := []string{"battery", "inverter", "meter"}[r.IntN(3)]
		rd := hearth.Reading{Seq: seq, Device: dev, Time: ts, Clock: hearth.ClockSynced, Boot: boot, MonoMS: mono, Points: map[string]hearth.Point{}}
		if r.IntN(5) == 0 {
			rd.Clock = hearth.ClockUnsynced
		}
		for j := range 8 + r.IntN(8) {
			name := dev + "_p" + string(rune('a'+j))
			switch k := r.IntN(10); {
			case k == 0: // the point is missing from this reading
			case k == 1:
				rd.Points[name] = hearth.Q(qualities[r.IntN(len(qualities))])
			case k < 4:
				rd.Points[name] = hearth.V(edge[r.IntN(len(edge))])
			default:
				rd.Points[name] = hearth.V(math.Float64frombits(r.Uint64()&^(0x7ff<<52) | uint64(1000+r.IntN(100))<<52))
			}
		}
		rs = append(rs, rd)
	}
	rs[3].Points["nan"] = hearth.V(math.NaN()) // encoded as out_of_range, as in the JSON format
	payload := encodeLean(rs)
	if !bytes.HasPrefix(payload, gzipMagic) {
		t.Errorf("300 readings not compressed")
	}
	got, err := DecodeTelemetry(payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Readings) != len(rs) {
		t.Fatalf("%d readings back, want %d", len(got.Readings), len(rs))
	}
	for i, want := range rs {
		g := got.Readings[i]
		if g.Seq != want.Seq || g.Device != want.Device || g.Clock != want.Clock || g.Boot != want.Boot || g.MonoMS != want.MonoMS ||
			!g.Time.Equal(want.Time.Truncate(time.Millisecond)) || len(g.Points) != len(want.Points) {
			t.Fatalf("reading %d: got %+v, want %+v", i, g, want)
		}
		for name, p := range want.Points {
			gp := g.Points[name]
			if math.IsNaN(p.Value) {
				p = hearth.Q(hearth.QualityOutOfRange)
			}
			if gp.Quality != p.Quality || math.Float64bits(gp.Value) != math.Float64bits(p.Value) {
				t.Fatalf("reading %d point %s: got %+v, want %+v (bits %x vs %x)", i, name, gp, p, math.Float64bits(gp.Value), math.Float64bits(p.Value))
			}
		}
	}
}

// TestLeanSmallNotCompressed: a single short reading is sent as plain JSON
// when gzip would make it larger.
func TestLeanSmallNotCompressed(t *testing.T) {
	p := encodeLean([]hearth.Reading{{Seq: 1, Device: "b", Time: time.UnixMilli(1), Boot: "x", Points: map[string]hearth.Point{"v": hearth.V(1)}}})
	if p[0] != '{' {
		t.Errorf("payload %q: want plain JSON", p)
	}
}

// TestDecodeTelemetryRefusesBombsAndBadRows: a payload inflating beyond
// the bound, and rows that do not fit their device, are errors.
func TestDecodeTelemetryRefusesBombsAndBadRows(t *testing.T) {
	bomb := compress(append([]byte(`{"lean":1,"x":"`), bytes.Repeat([]byte("a"), maxInflated+10)...))
	if _, err := DecodeTelemetry(bomb); err == nil {
		t.Error("a gzip bomb decoded")
	}
	for _, doc := range []string{
		`{"lean":1,"boot":"b","seq":1,"ts":0,"mono":0,"dev":[["d",["a"]]],"rows":[[0,1,0,0,1,[1]]]}`,                 // no device 1
		`{"lean":1,"boot":"b","seq":1,"ts":0,"mono":0,"dev":[["d",["a"]]],"rows":[[0,0,0,0,1,[1,2]]]}`,               // two values for one point
		`{"lean":1,"boot":"b","seq":1,"ts":0,"mono":0,"dev":[["d",["a"]]],"rows":[[0,0,0,0,1,[1]],[0,0,0,0,1,[1]]]}`, // seq not rising
		`{"lean":2,"boot":"b","seq":1,"ts":0,"mono":0,"dev":[],"rows":[]}`,
	} {
		if _, err := DecodeTelemetry([]byte(doc)); err == nil {
			t.Errorf("%s decoded", doc)
		}
	}
}

// BenchmarkEncodeLean encodes one message of the default window (four
// devices, 5 s at 1 Hz, 15 points each) and one of a backlog (leanMaxRows
// readings): the work and allocations each telemetry message costs.
func BenchmarkEncodeLean(b *testing.B) {
	for _, n := range []int{20, leanMaxRows} {
		var rs []hearth.Reading
		t0 := time.UnixMilli(1764064801123)
		for i := range n {
			dev := []string{"battery", "inverter", "meter", "pv"}[i%4]
			pts := map[string]hearth.Point{"temp_c": hearth.Q(hearth.QualityNotImplemented)}
			for j := range 14 {
				pts[dev+"_p"+string(rune('a'+j))] = hearth.V(float64(i*j) + 0.25)
			}
			rs = append(rs, hearth.Reading{Seq: uint64(i + 1), Device: dev, Time: t0.Add(time.Duration(i/4) * time.Second),
				Boot: "9f2c61d04ab3e871", MonoMS: int64(i/4) * 1000, Clock: hearth.ClockSynced, Points: pts})
		}
		b.Run(fmt.Sprintf("readings=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				encodeLean(rs)
			}
		})
	}
}

// TestAppendStringIsJSON: names and qualities are written exactly as
// encoding/json writes them, whatever bytes they hold.
func TestAppendStringIsJSON(t *testing.T) {
	for _, s := range []string{"", "soc_pct", "comm_error", "a b", "~", "\x7f", `q"uote`, `back\slash`, "<b>&", "tab\t", "\x00", "é", "\xff", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := appendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("appendString(%q) = %s, want x%s", s, got, want)
		}
	}
}
