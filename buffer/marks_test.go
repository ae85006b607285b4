package buffer

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/hearth-energy/hearth"
)

// TestFreshDatabaseStartsAboveTheMarks: seqs and event ids handed out by a
// database that is then lost (deleted here; moved aside when corrupt) are
// never handed out again by the fresh one, and the State file is written
// only when a mark is raised, not per commit.
func TestFreshDatabaseStartsAboveTheMarks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := OpenStateAlone(filepath.Join(dir, "state.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "hearth.db")
	open := func() *Store {
		s, err := Open(db, Options{Marks: st})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.UseMirror(s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	var last hearth.Reading
	first := ""
	for i := range 50 {
		out, err := s.Append([]hearth.Reading{reading(i)})
		if err != nil {
			t.Fatal(err)
		}
		last = out[0]
		if i == 0 {
			first, _, _ = st.Meta(metaSeqMark)
		}
	}
	ev, err := s.AppendEvent(hearth.Event{Type: "trip"})
	if err != nil {
		t.Fatal(err)
	}
	mark, _, _ := st.Meta(metaSeqMark)
	if n, _ := strconv.ParseUint(mark, 10, 64); n <= last.Seq || mark != first {
		t.Errorf("seq mark %q (after the first commit %q), want one mark above the last seq %d, not raised per commit", mark, first, last.Seq)
	}
	s.Close()
	for _, ext := range []string{"", "-wal", "-shm"} {
		os.Remove(db + ext)
	}
	s = open()
	defer s.Close()
	out, err := s.Append([]hearth.Reading{reading(99)})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Seq <= last.Seq {
		t.Errorf("fresh database: seq %d, want above %d", out[0].Seq, last.Seq)
	}
	ev2, err := s.AppendEvent(hearth.Event{Type: "trip"})
	if err != nil {
		t.Fatal(err)
	}
	if ev2.ID <= ev.ID {
		t.Errorf("fresh database: event id %d, want above %d", ev2.ID, ev.ID)
	}
}
