package buffer

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"github.com/hearth-energy/hearth/internal/clocktest"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// TestMigrateFromV1 builds a database with the version 1 schema by hand,
// fills it, and checks that Open upgrades it in place with nothing lost and
// seqs going on from where they were.
func TestMigrateFromV1(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buffer.db")
	db, err := sql.Open("sqlite3", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		"PRAGMA auto_vacuum = INCREMENTAL", "VACUUM", migrations[0], "PRAGMA user_version = 1",
		`INSERT INTO readings (device, ts, clock, boot, mono_ms, payload) VALUES
			('battery', 1764064801123, 'synced', 'b1', 10, '{"soc_pct":{"v":72.5}}'),
			('inverter', 1764064802123, 'unsynced', 'b1', 20, '{"temp_c":{"q":"comm_error"}}'),
			('battery', 1764064803123, 'synced', 'b1', 30, '{"soc_pct":{"v":73}}')`,
		"DELETE FROM readings WHERE seq = 3", // the highest seq was acked: never reuse it
		`INSERT INTO events (ts, type, payload) VALUES (1764064801000, 'trip', '{"rule":"soc_min"}')`,
		`INSERT INTO meta (key, value) VALUES ('lease', '{"version":7}')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path, Options{})
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("user_version = %d (%v), want %d", v, err, len(migrations))
	}
	got := mustPending(t, s, 10)
	want := []hearth.Reading{
		{Seq: 1, Device: "battery", Time: time.UnixMilli(1764064801123).UTC(), Clock: hearth.ClockSynced,
			Boot: "b1", MonoMS: 10, Points: map[string]hearth.Point{"soc_pct": hearth.V(72.5)}},
		{Seq: 2, Device: "inverter", Time: time.UnixMilli(1764064802123).UTC(), Clock: hearth.ClockUnsynced,
			Boot: "b1", MonoMS: 20, Points: map[string]hearth.Point{"temp_c": hearth.Q(hearth.QualityCommError)}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readings after migration:\n got %+v\nwant %+v", got, want)
	}
	evs, err := s.PendingEvents(10)
	if err != nil || len(evs) != 1 || evs[0].Type != "trip" || string(evs[0].Data) != `{"rule":"soc_min"}` {
		t.Errorf("events after migration = %+v (%v), want the one trip", evs, err)
	}
	if v, ok, err := s.Meta("lease"); err != nil || !ok || v != `{"version":7}` {
		t.Errorf("meta lease = %q %t %v", v, ok, err)
	}
	if next := mustAppend(t, s, readings(0, 1)); next[0].Seq != 4 {
		t.Errorf("first seq after migration = %d, want 4", next[0].Seq)
	}
	// The new schema is in use: restamping finds the unsynced reading.
	if n, err := s.Restamp("b1", t0, 1020); err != nil || n != 1 {
		t.Errorf("Restamp after migration = %d, %v; want 1", n, err)
	}
	if aggs, err := s.PendingAggregates(1); err != nil || len(aggs) != 0 {
		t.Errorf("PendingAggregates after migration = %v, %v", aggs, err)
	}
}

// quotaReading is reading i of a 4-device gateway polled every 15 s: a
// minute holds four readings per device. Points vary, some samples carry a
// quality instead of a value, and some lack a point altogether.
func quotaReading(rng *rand.Rand, start time.Time, i int) hearth.Reading {
	points := map[string]hearth.Point{
		"soc_pct": hearth.V(float64(rng.IntN(10000)) / 100),
		"power_w": hearth.V(float64(rng.IntN(20001) - 10000)),
	}
	switch rng.IntN(4) {
	case 0:
		points["temp_c"] = hearth.Q(hearth.QualityCommError)
	case 1:
		points["temp_c"] = hearth.Q(hearth.QualityStale)
	case 2:
		points["temp_c"] = hearth.V(20 + rng.Float64()*10)
	}
	return hearth.Reading{
		Device: fmt.Sprintf("dev%d", i%4),
		Time:   start.Add(time.Duration(i/4) * 15 * time.Second),
		Clock:  hearth.ClockSynced,
		Boot:   "b00t",
		MonoMS: int64(i/4) * 15000,
		Points: points,
	}
}

// drain returns everything pending in s.
func drain(t *testing.T, s *Store) ([]hearth.Reading, []hearth.Aggregate, []hearth.Event) {
	t.Helper()
	var rs []hearth.Reading
	for after := uint64(0); ; {
		page, err := s.PendingAfter(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		rs = append(rs, page...)
		after = page[len(page)-1].Seq
	}
	aggs, err := s.PendingAggregates(math.MaxInt32)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.PendingEvents(math.MaxInt32)
	if err != nil {
		t.Fatal(err)
	}
	return rs, aggs, evs
}

func gapsOf(t *testing.T, evs []hearth.Event) []Gap {
	t.Helper()
	var gaps []Gap
	for _, ev := range evs {
		if ev.Type != EventGap {
			continue
		}
		var g Gap
		if err := json.Unmarshal(ev.Data, &g); err != nil {
			t.Fatalf("gap event %s: %v", ev.Data, err)
		}
		if g.FromSeq == 0 || g.ToSeq < g.FromSeq || g.Readings <= 0 {
			t.Errorf("malformed gap %+v", g)
		}
		gaps = append(gaps, g)
	}
	return gaps
}

// checkAccounting asserts that every seq from 1 to last is accounted for
// exactly once: pending as a reading, inside one pending aggregate of its
// device, or inside one gap; that seqs never appended (reserved) are in a
// gap; and that every aggregate matches the raw readings it replaced.
func checkAccounting(t *testing.T, s *Store, appended map[uint64]hearth.Reading, last uint64) (nAggs, nGaps int) {
	t.Helper()
	rs, aggs, evs := drain(t, s)
	gaps := gapsOf(t, evs)
	pending := map[uint64]bool{}
	for _, r := range rs {
		pending[r.Seq] = true
	}
	var total int64
	for seq := uint64(1); seq <= last; seq++ {
		r, known := appended[seq]
		var where []string
		if pending[seq] {
			where = append(where, "pending")
		}
		for _, a := range aggs {
			if known && a.Device == r.Device && a.SeqFrom <= seq && seq <= a.SeqTo {
				where = append(where, fmt.Sprintf("aggregate %d-%d", a.SeqFrom, a.SeqTo))
			}
		}
		for _, g := range gaps {
			if g.FromSeq <= seq && seq <= g.ToSeq {
				where = append(where, fmt.Sprintf("gap %d-%d (%s)", g.FromSeq, g.ToSeq, g.Reason))
			}
		}
		if len(where) != 1 {
			t.Fatalf("seq %d (appended: %t) is in %v, want exactly one place", seq, known, where)
		}
		if !known && !strings.HasPrefix(where[0], "gap") {
			t.Fatalf("seq %d was never appended but is in %s", seq, where[0])
		}
	}
	total = int64(len(rs))
	for _, a := range aggs {
		checkAggregate(t, a, appended)
		total += int64(a.N)
	}
	for _, g := range gaps {
		total += g.Readings
	}
	if total != int64(last) {
		t.Errorf("pending readings, aggregate n and gap readings add up to %d, want %d", total, last)
	}
	return len(aggs), len(gaps)
}

// checkAggregate recomputes a from the raw readings it replaced.
func checkAggregate(t *testing.T, a hearth.Aggregate, appended map[uint64]hearth.Reading) {
	t.Helper()
	type acc struct {
		min, max, sum float64
		n             int
		q             map[hearth.Quality]int
	}
	accs := map[string]*acc{}
	n := 0
	var minute time.Time
	for seq := a.SeqFrom; seq <= a.SeqTo; seq++ {
		r, ok := appended[seq]
		if !ok || r.Device != a.Device {
			continue
		}
		n++
		minute = r.Time.Truncate(time.Minute)
		if !r.Time.Truncate(time.Minute).Equal(a.Time) || r.Clock != a.Clock {
			t.Errorf("aggregate %d-%d of %s at %v %s holds seq %d at %v %s",
				a.SeqFrom, a.SeqTo, a.Device, a.Time, a.Clock, seq, r.Time, r.Clock)
		}
		for name, p := range r.Points {
			x := accs[name]
			if x == nil {
				x = &acc{min: math.Inf(1), max: math.Inf(-1)}
				accs[name] = x
			}
			if !p.Good() {
				if x.q == nil {
					x.q = map[hearth.Quality]int{}
				}
				x.q[p.Quality]++
				continue
			}
			x.min, x.max, x.sum, x.n = math.Min(x.min, p.Value), math.Max(x.max, p.Value), x.sum+p.Value, x.n+1
		}
	}
	if n != a.N || !minute.Equal(a.Time) {
		t.Errorf("aggregate %d-%d of %s: n %d at %v, raw readings say %d at %v", a.SeqFrom, a.SeqTo, a.Device, a.N, a.Time, n, minute)
	}
	if len(accs) != len(a.Points) {
		t.Errorf("aggregate %d-%d: points %v, raw readings have %d", a.SeqFrom, a.SeqTo, a.Points, len(accs))
	}
	for name, x := range accs {
		got := a.Points[name]
		want := hearth.PointAggregate{N: x.n, Q: x.q}
		if x.n > 0 {
			want.Min, want.Max, want.Avg = x.min, x.max, x.sum/float64(x.n)
		}
		if math.Abs(got.Avg-want.Avg) <= 1e-9*math.Max(1, math.Abs(want.Avg)) {
			got.Avg = want.Avg
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("aggregate %d-%d of %s, point %s = %+v, want %+v", a.SeqFrom, a.SeqTo, a.Device, name, got, want)
		}
	}
}

// TestQuotaCompactsThenDrops appends two days of readings under a quota
// that holds a fraction of them. The store must stay under its quota after
// every append, compact before it drops, keep aggregates faithful to the
// raw values, and account for every seq with gap events.
func TestQuotaCompactsThenDrops(t *testing.T) {
	t.Parallel()
	const maxBytes = 384 << 10
	clock := clocktest.New(time.Time{})
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	s := openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{
		MaxBytes: maxBytes, CompactAge: 10 * time.Minute, Now: clock.Now,
	})
	if _, err := s.AppendEvent(hearth.Event{Type: "trip", Data: json.RawMessage(`{"rule":"soc_min"}`)}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	appended := map[uint64]hearth.Reading{}
	var last uint64
	sawAggregates := false
	const batch = 8
	for i := 0; i < 24000; i += batch {
		rs := make([]hearth.Reading, batch)
		for j := range rs {
			rs[j] = quotaReading(rng, start, i+j)
		}
		clock.Set(rs[batch-1].Time.Add(time.Second))
		got := mustAppend(t, s, rs)
		for _, r := range got {
			appended[r.Seq] = r
			last = r.Seq
		}
		if i%400 == 0 {
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.FileBytes > maxBytes {
				t.Fatalf("after %d readings: %d bytes used, over the %d quota", i+batch, st.FileBytes, maxBytes)
			}
			if st.PendingAggregates > 0 && st.AggregatesDropped == 0 {
				sawAggregates = true
			}
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v", st)
	if st.FileBytes > maxBytes {
		t.Errorf("%d bytes used, over the %d quota", st.FileBytes, maxBytes)
	}
	if !sawAggregates || st.Compactions == 0 || st.ReadingsCompacted == 0 || st.AggregatesDropped == 0 {
		t.Errorf("want compaction, then aggregates dropped; stats %+v (aggregates seen before drops: %t)", st, sawAggregates)
	}
	if st.ReadingsDropped != 0 || st.EventsDropped != 0 {
		t.Errorf("raw readings or events dropped while aggregates could go: %+v", st)
	}
	if st.LastSeq != last {
		t.Errorf("LastSeq = %d, want %d", st.LastSeq, last)
	}
	nAggs, nGaps := checkAccounting(t, s, appended, last)
	if nAggs == 0 || nGaps == 0 {
		t.Errorf("%d aggregates and %d gaps pending, want both", nAggs, nGaps)
	}
	// The newest readings, younger than CompactAge, are at full resolution.
	rs, _, evs := drain(t, s)
	if len(rs) == 0 || rs[len(rs)-1].Seq != last {
		t.Errorf("newest reading not pending at full resolution")
	}
	if evs[0].Type != "trip" {
		t.Errorf("oldest event is %s, want the trip kept", evs[0].Type)
	}
	for _, g := range gapsOf(t, evs) {
		if g.Reason != GapQuota {
			t.Errorf("gap reason %q, want %q", g.Reason, GapQuota)
		}
	}
}

// TestQuotaDropsYoungReadings fills a quota with readings too young to
// compact: the oldest go as gaps, the events stay.
func TestQuotaDropsYoungReadings(t *testing.T) {
	t.Parallel()
	const maxBytes = 256 << 10
	clock := clocktest.New(t0)
	s := openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{
		MaxBytes: maxBytes, CompactAge: 1000 * time.Hour, Now: clock.Now,
	})
	for range 5 {
		if _, err := s.AppendEvent(hearth.Event{Type: "trip"}); err != nil {
			t.Fatal(err)
		}
	}
	appended := map[uint64]hearth.Reading{}
	var last uint64
	for i := 0; i < 6000; i += 20 {
		for _, r := range mustAppend(t, s, readings(i, 20)) {
			appended[r.Seq] = r
			last = r.Seq
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ReadingsDropped == 0 || st.Compactions != 0 || st.EventsDropped != 0 || st.FileBytes > maxBytes {
		t.Errorf("want readings dropped, nothing compacted, no event dropped, under quota; stats %+v", st)
	}
	checkAccounting(t, s, appended, last)
	_, _, evs := drain(t, s)
	for i := range 5 {
		if evs[i].Type != "trip" {
			t.Errorf("event %d is %s, want the trips kept first", i, evs[i].Type)
		}
	}
}

// TestQuotaDropsEventsLast fills a quota with events alone: they go only
// because nothing else is left, and an events_dropped event says so.
func TestQuotaDropsEventsLast(t *testing.T) {
	t.Parallel()
	const maxBytes = 256 << 10
	s := openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{MaxBytes: maxBytes})
	big := json.RawMessage(`"` + strings.Repeat("x", 2000) + `"`)
	for range 200 {
		if _, err := s.AppendEvent(hearth.Event{Type: "trip", Data: big}); err != nil {
			t.Fatal(err)
		}
		// Appending readings is what enforces the quota.
		got := mustAppend(t, s, readings(0, 1))
		if err := s.Ack(seqsOf(got)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.EventsDropped == 0 || st.FileBytes > maxBytes {
		t.Fatalf("want events dropped under quota; stats %+v", st)
	}
	evs, err := s.PendingEvents(1000)
	if err != nil {
		t.Fatal(err)
	}
	var dropped int64
	for i, ev := range evs {
		if i > 0 && ev.ID <= evs[i-1].ID {
			t.Errorf("event ids out of order")
		}
		if ev.Type == EventEventsDropped {
			var d struct{ Events int64 }
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			dropped += d.Events
		}
	}
	if dropped != st.EventsDropped {
		t.Errorf("events_dropped events count %d, counter says %d", dropped, st.EventsDropped)
	}
	if last := evs[len(evs)-1]; last.Type == "trip" && int(last.ID) < 200 {
		t.Errorf("newest trip event was dropped; last pending is %d", last.ID)
	}
}

// TestRestamp re-stamps the unsynced readings of one boot from its
// monotonic clock, and leaves seqs, synced readings and other boots alone.
func TestRestamp(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	epoch := time.Unix(0, 0).UTC()
	in := []hearth.Reading{
		{Device: "a", Time: epoch.Add(5 * time.Second), Clock: hearth.ClockUnsynced, Boot: "old", MonoMS: 5000},
		{Device: "a", Time: epoch.Add(3 * time.Second), Clock: hearth.ClockUnsynced, Boot: "cur", MonoMS: 3000},
		{Device: "a", Time: epoch.Add(4 * time.Second), Clock: hearth.ClockUnsynced, Boot: "cur", MonoMS: 4000},
		// The clock synced and stepped forward; then a synced reading.
		{Device: "a", Time: t0, Clock: hearth.ClockSynced, Boot: "cur", MonoMS: 9000},
	}
	got := mustAppend(t, s, in)
	n, err := s.Restamp("cur", t0, 9000)
	if err != nil || n != 2 {
		t.Fatalf("Restamp = %d, %v; want 2", n, err)
	}
	after := mustPending(t, s, 10)
	want := []struct {
		clock hearth.ClockState
		ts    time.Time
	}{
		{hearth.ClockUnsynced, epoch.Add(5 * time.Second)},
		{hearth.ClockRestamped, t0.Truncate(time.Millisecond).Add(-6 * time.Second)},
		{hearth.ClockRestamped, t0.Truncate(time.Millisecond).Add(-5 * time.Second)},
		{hearth.ClockSynced, t0.Truncate(time.Millisecond)},
	}
	for i, w := range want {
		if after[i].Seq != got[i].Seq || after[i].Clock != w.clock || !after[i].Time.Equal(w.ts) {
			t.Errorf("reading %d = seq %d %s %v, want seq %d %s %v",
				i, after[i].Seq, after[i].Clock, after[i].Time, got[i].Seq, w.clock, w.ts)
		}
	}
	if n, err := s.Restamp("cur", t0, 9000); err != nil || n != 0 {
		t.Errorf("second Restamp = %d, %v; want 0", n, err)
	}
}

// TestClockStepBack appends readings whose wall clock steps back an hour
// halfway: seqs keep increasing in append order, and compaction keeps the
// two sides apart, each aggregate faithful and no two of one device
// overlapping.
func TestClockStepBack(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(t0.Add(24 * time.Hour))
	s := openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{MaxBytes: 1 << 30, Now: clock.Now})
	var in []hearth.Reading
	for i := range 240 {
		r := reading(i)
		if i >= 120 {
			r.Time = r.Time.Add(-time.Hour)
		}
		in = append(in, r)
	}
	got := mustAppend(t, s, in)
	appended := map[uint64]hearth.Reading{}
	for i, r := range got {
		appended[r.Seq] = r
		if i > 0 && r.Seq <= got[i-1].Seq {
			t.Fatalf("seq %d after %d", r.Seq, got[i-1].Seq)
		}
	}
	if did, err := s.compactOldest(t.Context()); err != nil || !did {
		t.Fatalf("compactOldest = %t, %v", did, err)
	}
	_, aggs, _ := drain(t, s)
	for i, a := range aggs {
		for _, b := range aggs[i+1:] {
			if a.Device == b.Device && a.SeqFrom <= b.SeqTo && b.SeqFrom <= a.SeqTo {
				t.Errorf("aggregates %d-%d and %d-%d of %s overlap", a.SeqFrom, a.SeqTo, b.SeqFrom, b.SeqTo, a.Device)
			}
		}
	}
	checkAccounting(t, s, appended, got[len(got)-1].Seq)
}

func TestParseWriteBytes(t *testing.T) {
	t.Parallel()
	in := "rchar: 6976\nwchar: 12\nsyscr: 10\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 123456789\ncancelled_write_bytes: 0\n"
	if got := parseWriteBytes([]byte(in)); got != 123456789 {
		t.Errorf("parseWriteBytes = %d, want 123456789", got)
	}
	if got := parseWriteBytes([]byte("rchar: 1\n")); got != 0 {
		t.Errorf("parseWriteBytes without the field = %d, want 0", got)
	}
}

// TestQuotaCompactsYoungBeforeDropping: with nothing as old as CompactAge,
// the quota still compacts (all but the last minutes) before it drops a
// single reading, because resolution is cheaper to lose than readings.
func TestQuotaCompactsYoungBeforeDropping(t *testing.T) {
	t.Parallel()
	const maxBytes = 384 << 10
	clock := clocktest.New(time.Time{})
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	s := openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{
		MaxBytes: maxBytes, CompactAge: 1000 * time.Hour, Now: clock.Now,
	})
	rng := rand.New(rand.NewPCG(3, 4))
	appended := map[uint64]hearth.Reading{}
	var last uint64
	const batch = 8
	for i := 0; i < 6000; i += batch {
		rs := make([]hearth.Reading, batch)
		for j := range rs {
			rs[j] = quotaReading(rng, start, i+j)
		}
		clock.Set(rs[batch-1].Time.Add(time.Second))
		for _, r := range mustAppend(t, s, rs) {
			appended[r.Seq] = r
			last = r.Seq
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Compactions == 0 || st.ReadingsCompacted == 0 || st.ReadingsDropped != 0 || st.FileBytes > maxBytes {
		t.Errorf("want young readings compacted, none dropped, under quota; stats %+v", st)
	}
	// The last minutes stay at full resolution.
	newest, err := s.Newest(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(newest) != 1 || newest[0].Seq != last {
		t.Errorf("the newest reading is not kept at full resolution: %+v", newest)
	}
	checkAccounting(t, s, appended, last)
}
