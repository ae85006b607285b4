package buffer

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

func openTest(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newTestStore(t *testing.T) *Store {
	t.Helper()
	return openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{})
}

var t0 = time.Date(2026, 11, 25, 10, 0, 1, 123456789, time.UTC)

func reading(i int) hearth.Reading {
	return hearth.Reading{
		Device: fmt.Sprintf("dev%d", i%3),
		Time:   t0.Add(time.Duration(i) * time.Second),
		Clock:  hearth.ClockSynced,
		Boot:   "9f2c",
		MonoMS: int64(1000 + i),
		Points: map[string]hearth.Point{
			"soc_pct": hearth.V(72.5 + float64(i)),
			"power_w": hearth.V(-1500),
			"temp_c":  hearth.Q(hearth.QualityCommError),
		},
	}
}

func readings(from, n int) []hearth.Reading {
	rs := make([]hearth.Reading, n)
	for i := range rs {
		rs[i] = reading(from + i)
	}
	return rs
}

func seqsOf(rs []hearth.Reading) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func mustAppend(t *testing.T, s *Store, rs []hearth.Reading) []hearth.Reading {
	t.Helper()
	got, err := s.Append(rs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return got
}

func mustPending(t *testing.T, s *Store, limit int) []hearth.Reading {
	t.Helper()
	got, err := s.Pending(limit)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return got
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	in := []hearth.Reading{
		reading(0),
		{
			Seq:    999, // ignored
			Device: "inverter",
			Time:   time.Date(1970, 1, 1, 0, 0, 42, 999999999, time.FixedZone("X", 3600)),
			Clock:  hearth.ClockUnsynced,
			Boot:   "b00t",
			MonoMS: 42999,
			Points: map[string]hearth.Point{
				"a_w":   hearth.V(0),
				"b_v":   hearth.V(-3.412e-7),
				"c_hz":  hearth.V(1e300),
				"d":     hearth.Q(hearth.QualityNotImplemented),
				"e":     hearth.Q(hearth.QualityOutOfRange),
				"f":     hearth.Q(hearth.QualityStale),
				"g_pct": hearth.V(72.5),
			},
		},
		{Device: "empty", Time: t0, Clock: hearth.ClockSynced, Points: map[string]hearth.Point{}},
		{Device: "nil", Time: t0, Clock: hearth.ClockSynced},
	}
	appended := mustAppend(t, s, in)

	want := make([]hearth.Reading, len(in))
	for i, r := range in {
		r.Seq = uint64(i + 1)
		r.Time = time.UnixMilli(r.Time.UnixMilli()).UTC()
		want[i] = r
	}
	if !reflect.DeepEqual(appended, want) {
		t.Errorf("Append returned\n%+v\nwant\n%+v", appended, want)
	}
	got := mustPending(t, s, 10)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Pending returned\n%+v\nwant\n%+v", got, want)
	}
	if got[1].Time.Location() != time.UTC || got[1].Time.Nanosecond() != 999000000 {
		t.Errorf("time = %v, want UTC with millisecond precision", got[1].Time)
	}
	if in[0].Seq != 0 {
		t.Errorf("Append modified its input")
	}
}

func TestAppendEmpty(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	got, err := s.Append(nil)
	if err != nil || got != nil {
		t.Fatalf("Append(nil) = %v, %v; want nil, nil", got, err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.LastSeq != 0 {
		t.Errorf("LastSeq = %d after empty append, want 0", st.LastSeq)
	}
}

func TestSeqPersistsAndIsNeverReused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buffer.db")
	var all []uint64
	for round := range 4 {
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		got := mustAppend(t, s, readings(round*5, 5))
		all = append(all, seqsOf(got)...)
		// Ack the newest rows: their seqs must not come back.
		if err := s.Ack(seqsOf(got[2:])); err != nil {
			t.Fatalf("round %d: Ack: %v", round, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
	}
	for i := 1; i < len(all); i++ {
		if all[i] <= all[i-1] {
			t.Fatalf("seqs not strictly increasing: %v", all)
		}
	}
	s := openTest(t, path, Options{})
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := all[len(all)-1]; st.LastSeq != want {
		t.Errorf("LastSeq = %d, want %d", st.LastSeq, want)
	}
	if st.PendingReadings != 8 {
		t.Errorf("PendingReadings = %d, want 8", st.PendingReadings)
	}
}

func TestAckRemovesOnlyAcked(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	got := mustAppend(t, s, readings(0, 10))
	ack := []uint64{got[0].Seq, got[3].Seq, got[9].Seq, 12345, 1<<64 - 1}
	if err := s.Ack(ack); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := s.Ack(ack); err != nil {
		t.Fatalf("second Ack of the same seqs: %v", err)
	}
	if err := s.Ack(nil); err != nil {
		t.Fatalf("Ack(nil): %v", err)
	}
	want := []uint64{2, 3, 5, 6, 7, 8, 9}
	if got := seqsOf(mustPending(t, s, 100)); !reflect.DeepEqual(got, want) {
		t.Errorf("pending seqs = %v, want %v", got, want)
	}
}

func TestPendingOrderAndPaging(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	for i := range 5 {
		mustAppend(t, s, readings(i*4, 4)) // seqs 1..20
	}
	if err := s.Ack([]uint64{5, 6}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() ([]hearth.Reading, error)
		want []uint64
	}{
		{"Pending(3)", func() ([]hearth.Reading, error) { return s.Pending(3) }, []uint64{1, 2, 3}},
		{"PendingAfter(4,3)", func() ([]hearth.Reading, error) { return s.PendingAfter(4, 3) }, []uint64{7, 8, 9}},
		{"PendingAfter(18,5)", func() ([]hearth.Reading, error) { return s.PendingAfter(18, 5) }, []uint64{19, 20}},
		{"PendingAfter(20,5)", func() ([]hearth.Reading, error) { return s.PendingAfter(20, 5) }, nil},
		{"PendingAfter(max,5)", func() ([]hearth.Reading, error) { return s.PendingAfter(1<<64-1, 5) }, nil},
		{"Newest(3)", func() ([]hearth.Reading, error) { return s.Newest(3) }, []uint64{18, 19, 20}},
		{"Newest(100)", func() ([]hearth.Reading, error) { return s.Newest(100) },
			[]uint64{1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}},
	}
	for _, tt := range tests {
		got, err := tt.call()
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if g := seqsOf(got); !slices.Equal(g, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, g, tt.want)
		}
	}

	// Paging through everything visits each pending seq once, in order.
	var paged []uint64
	var after uint64
	for {
		page, err := s.PendingAfter(after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, seqsOf(page)...)
		after = page[len(page)-1].Seq
	}
	if want := seqsOf(mustPending(t, s, 100)); !reflect.DeepEqual(paged, want) {
		t.Errorf("paged = %v, want %v", paged, want)
	}

	for _, limit := range []int{0, -1} {
		if _, err := s.Pending(limit); err == nil {
			t.Errorf("Pending(%d): no error", limit)
		}
		if _, err := s.Newest(limit); err == nil {
			t.Errorf("Newest(%d): no error", limit)
		}
		if _, err := s.PendingEvents(limit); err == nil {
			t.Errorf("PendingEvents(%d): no error", limit)
		}
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	s := openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{MaxBytes: 1 << 20})
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingReadings != 0 || st.PendingEvents != 0 || !st.OldestPending.IsZero() || st.LastSeq != 0 {
		t.Errorf("empty store stats = %+v", st)
	}
	if st.FileBytes <= 0 || st.MaxBytes != 1<<20 {
		t.Errorf("FileBytes = %d, MaxBytes = %d; want > 0 and %d", st.FileBytes, st.MaxBytes, 1<<20)
	}
	empty := st.FileBytes

	got := mustAppend(t, s, readings(0, 500))
	if err := s.Ack(seqsOf(got[:10])); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.AppendEvent(hearth.Event{Type: "trip"}); err != nil {
			t.Fatal(err)
		}
	}
	st, err = s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{
		PendingReadings: 490,
		PendingEvents:   3,
		OldestPending:   got[10].Time,
		FileBytes:       st.FileBytes,
		MaxBytes:        1 << 20,
		LastSeq:         500,
		Commits:         5, // one append, one ack, three events
		WriteBytes:      st.WriteBytes,
		CommitsPerHour:  st.CommitsPerHour,
	}
	if st.CommitsPerHour <= 0 {
		t.Errorf("CommitsPerHour = %v after 5 commits, want > 0", st.CommitsPerHour)
	}
	if st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
	if st.FileBytes <= empty {
		t.Errorf("FileBytes = %d after 500 readings, not more than empty %d", st.FileBytes, empty)
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC)
	s := openTest(t, filepath.Join(t.TempDir(), "buffer.db"), Options{Now: func() time.Time { return now }})

	in := []hearth.Event{
		{Type: "trip", Data: json.RawMessage(`{"reason":"cell_v_max","value":3.65}`)},
		{Type: "setpoint", Time: t0, Data: json.RawMessage(`"applied"`)},
		{Type: "gap"},
	}
	var appended []hearth.Event
	for _, ev := range in {
		got, err := s.AppendEvent(ev)
		if err != nil {
			t.Fatalf("AppendEvent(%+v): %v", ev, err)
		}
		appended = append(appended, got)
	}
	want := []hearth.Event{
		{ID: 1, Time: now.Truncate(time.Millisecond), Type: "trip", Data: in[0].Data},
		{ID: 2, Time: t0.Truncate(time.Millisecond), Type: "setpoint", Data: in[1].Data},
		{ID: 3, Time: now.Truncate(time.Millisecond), Type: "gap"},
	}
	if !reflect.DeepEqual(appended, want) {
		t.Errorf("AppendEvent returned %+v, want %+v", appended, want)
	}
	got, err := s.PendingEvents(10)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PendingEvents = %+v, want %+v", got, want)
	}

	if err := s.AckEvents([]uint64{2, 99}); err != nil {
		t.Fatal(err)
	}
	got, err = s.PendingEvents(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != 1 || got[1].ID != 3 {
		t.Errorf("after AckEvents(2): %+v, want IDs 1 and 3", got)
	}

	for _, bad := range []hearth.Event{{}, {Type: "x", Data: json.RawMessage(`{`)}} {
		if _, err := s.AppendEvent(bad); err == nil {
			t.Errorf("AppendEvent(%+v): no error", bad)
		}
	}
}

func TestMeta(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buffer.db")
	s := openTest(t, path, Options{})
	if v, ok, err := s.Meta("boot"); err != nil || ok || v != "" {
		t.Errorf("Meta(missing) = %q, %v, %v; want \"\", false, nil", v, ok, err)
	}
	for _, v := range []string{"one", "two", ""} {
		if err := s.SetMeta("boot", v); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := s.Meta("boot"); err != nil || !ok || got != v {
			t.Errorf("Meta after SetMeta(%q) = %q, %v, %v", v, got, ok, err)
		}
	}
	if err := s.SetMeta("boot", "persisted"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, Options{})
	if got, ok, err := s.Meta("boot"); err != nil || !ok || got != "persisted" {
		t.Errorf("Meta after reopen = %q, %v, %v; want persisted", got, ok, err)
	}
}

// TestSchema checks the file's settings directly, behind the Store's back.
func TestSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buffer.db")
	s := openTest(t, path, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tt := range []struct {
		pragma string
		want   string
	}{
		{"user_version", fmt.Sprint(len(migrations))},
		{"auto_vacuum", "2"}, // incremental
		{"journal_mode", "wal"},
	} {
		var got string
		if err := db.QueryRow("PRAGMA " + tt.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %s, want %s", tt.pragma, got, tt.want)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buffer.db")
	s := openTest(t, path, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := Open(path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open of a newer schema: no error")
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 0 {
		t.Errorf("newer schema was moved aside as corrupt: %v", m)
	}
}

func TestOpenErrorLeavesPathAlone(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buffer.db")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open of a directory: no error")
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Errorf("directory at path was moved or removed: %v", err)
	}
}

// realDB writes a closed, checkpointed database with n readings and returns
// its path.
func realDB(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buffer.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 100 {
		mustAppend(t, s, readings(i, 100))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCorruptMovedAside(t *testing.T) {
	t.Parallel()
	garbage := bytes.Repeat([]byte("this is not an sqlite database\x00\xff"), 300)
	tests := []struct {
		name    string
		corrupt func(t *testing.T) string // returns the path of a corrupt database
	}{
		{"garbage", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "buffer.db")
			if err := os.WriteFile(path, garbage, 0o644); err != nil {
				t.Fatal(err)
			}
			// A stale WAL beside it must go too, not be replayed.
			if err := os.WriteFile(path+"-wal", garbage[:100], 0o644); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"short garbage", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "buffer.db")
			if err := os.WriteFile(path, garbage[:50], 0o644); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"truncated", func(t *testing.T) string {
			path := realDB(t, 2000)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"pages overwritten", func(t *testing.T) string {
			path := realDB(t, 2000)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Clobber b-tree pages past the header page.
			if _, err := f.WriteAt(garbage[:8192], 3*4096); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{"header overwritten", func(t *testing.T) string {
			path := realDB(t, 200)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(garbage[:100], 0); err != nil {
				t.Fatal(err)
			}
			return path
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := tt.corrupt(t)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
			s := openTest(t, path, Options{Now: func() time.Time { return now }})

			wantMoved := path + ".corrupt-20261125T100000.000000000Z"
			moved, err := os.ReadFile(wantMoved)
			if err != nil {
				t.Fatalf("corrupt file not moved aside to %s: %v", wantMoved, err)
			}
			if !bytes.Equal(moved, before) {
				t.Errorf("moved-aside file differs from the corrupt original: len %d vs %d", len(moved), len(before))
				for i := range min(len(moved), len(before)) {
					if moved[i] != before[i] {
						t.Errorf("first diff at %d", i)
						break
					}
				}
			}
			evs, err := s.PendingEvents(10)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 || evs[0].Type != EventCorrupt {
				t.Fatalf("events = %+v, want one %s", evs, EventCorrupt)
			}
			var data struct {
				Path    string `json:"path"`
				MovedTo string `json:"moved_to"`
				Reason  string `json:"reason"`
			}
			if err := json.Unmarshal(evs[0].Data, &data); err != nil {
				t.Fatalf("event data %s: %v", evs[0].Data, err)
			}
			if data.Path != path || data.MovedTo != wantMoved || data.Reason == "" {
				t.Errorf("event data = %+v, want path %s, moved_to %s and a reason", data, path, wantMoved)
			}
			t.Logf("reason: %s", data.Reason)
			// The fresh database works and starts from scratch.
			if rs := mustPending(t, s, 10); len(rs) != 0 {
				t.Errorf("fresh database has %d readings", len(rs))
			}
			if got := mustAppend(t, s, readings(0, 1)); got[0].Seq != 1 {
				t.Errorf("first seq in fresh database = %d, want 1", got[0].Seq)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	const writers, batches = 4, 25
	seqs := make(chan uint64, writers*batches*3)
	errs := make(chan error, writers*2)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range batches {
				got, err := s.Append(readings(w*1000+i, 3))
				if err != nil {
					errs <- err
					return
				}
				for _, r := range got {
					seqs <- r.Seq
				}
			}
		})
	}
	wg.Go(func() {
		for range batches {
			old, err := s.Pending(5)
			if err == nil {
				err = s.Ack(seqsOf(old))
			}
			if err == nil {
				_, err = s.Stats()
			}
			if err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(seqs)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	unique := map[uint64]bool{}
	for s := range seqs {
		if unique[s] {
			t.Errorf("seq %d assigned twice", s)
		}
		unique[s] = true
	}
	if len(unique) != writers*batches*3 {
		t.Errorf("%d distinct seqs, want %d", len(unique), writers*batches*3)
	}
}
