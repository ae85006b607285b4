package buffer

import (
	"encoding/json"
	"path/filepath"

	"github.com/hearth-energy/hearth"
	"testing"
)

// withSeqs gives rs the seqs from, from+1, …
func withSeqs(rs []hearth.Reading, from uint64) []hearth.Reading {
	for i := range rs {
		rs[i].Seq = from + uint64(i)
	}
	return rs
}

func pendingGaps(t *testing.T, s *Store) []Gap {
	t.Helper()
	evs, err := s.PendingEvents(1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []Gap
	for _, ev := range evs {
		if ev.Type != EventGap {
			continue
		}
		var g Gap
		if err := json.Unmarshal(ev.Data, &g); err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}

// TestReservedSeqsAfterCrash reserves a block, stores only some of it (the
// rest was "delivered live" or lost), and reopens without releasing: the
// range above the last stored seq is one not_stored gap, and new seqs come
// after the whole block.
func TestReservedSeqsAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(readings(0, 3)); err != nil { // seqs 1..3
		t.Fatal(err)
	}
	first, last, err := s.ReserveSeqs(100)
	if err != nil {
		t.Fatal(err)
	}
	if first != 4 || last != 103 {
		t.Fatalf("ReserveSeqs(100) = %d..%d, want 4..103", first, last)
	}
	if _, err := s.Append(readings(3, 1)); err == nil {
		t.Errorf("Append while seqs are reserved and unstored succeeded; want an error")
	}
	// 4..9 confirmed live (never stored), 10..11 stored.
	got, err := s.AppendWithSeq(withSeqs(readings(10, 2), 10))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Seq != 10 || got[1].Seq != 11 {
		t.Errorf("AppendWithSeq kept seqs %v, want [10 11]", seqsOf(got))
	}
	if _, err := s.AppendWithSeq(withSeqs(readings(12, 1), 11)); err == nil {
		t.Errorf("AppendWithSeq of a seq already stored succeeded")
	}
	if _, err := s.AppendWithSeq(withSeqs(readings(12, 1), 104)); err == nil {
		t.Errorf("AppendWithSeq of a seq never reserved succeeded")
	}
	if st, _ := s.Stats(); st.LastSeq != 103 {
		t.Errorf("Stats.LastSeq = %d, want the reserved 103", st.LastSeq)
	}
	_ = s.Close() // no ReleaseSeqs: as after a crash

	s = openTest(t, path, Options{})
	gaps := pendingGaps(t, s)
	if len(gaps) != 1 || gaps[0].FromSeq != 12 || gaps[0].ToSeq != 103 || gaps[0].Reason != GapNotStored {
		t.Fatalf("gaps after restart = %+v, want one not_stored gap 12..103", gaps)
	}
	if rs, _ := s.Append(readings(20, 1)); len(rs) != 1 || rs[0].Seq != 104 {
		t.Errorf("first seq after restart = %v, want 104", seqsOf(rs))
	}
	_ = s.Close()
	s = openTest(t, path, Options{})
	if gaps := pendingGaps(t, s); len(gaps) != 1 {
		t.Errorf("a second restart added gaps: %+v", gaps)
	}
}

// TestReleasedSeqsLeaveNoGap: after a clean shutdown releases the unused
// rest of the block, the next run goes on right after the last seq used.
func TestReleasedSeqsLeaveNoGap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReserveSeqs(1024); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendWithSeq(withSeqs(readings(0, 2), 5)); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseSeqs(1025); err == nil {
		t.Errorf("ReleaseSeqs above the reservation succeeded")
	}
	if err := s.ReleaseSeqs(9); err != nil { // 1..4 and 7..9 were delivered live
		t.Fatal(err)
	}
	_ = s.Close()
	s = openTest(t, path, Options{})
	if gaps := pendingGaps(t, s); len(gaps) != 0 {
		t.Errorf("gaps after a clean shutdown: %+v", gaps)
	}
	first, _, err := s.ReserveSeqs(4)
	if err != nil || first != 10 {
		t.Errorf("ReserveSeqs after release = %d (%v), want 10", first, err)
	}
	st, err := s.Stats()
	if err != nil || st.Commits != 1 {
		t.Errorf("Stats.Commits = %d (%v) after Open and one reservation, want 1", st.Commits, err)
	}
}
