package buffer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hearth-energy/hearth"
)

// mountTmpfs mounts a tmpfs of the given size on a fresh directory and
// unmounts it when the test ends (after the cleanups registered later,
// such as closing the store).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("the full-disk test mounts a %s tmpfs to fill it, which needs root (or CAP_SYS_ADMIN): %v", size, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
}

// TestDiskFull fills the file system under a store: Append fails with
// ErrDiskFull and counts what it refused, reads keep working, and once
// there is room again Append works, reserving a seq per refused reading
// and recording exactly that range as a disk_full gap.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	dir := mountTmpfs(t, "1m")
	s := openTest(t, filepath.Join(dir, "buffer.db"), Options{})

	appended := map[uint64]hearth.Reading{}
	for _, r := range mustAppend(t, s, readings(0, 50)) {
		appended[r.Seq] = r
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	// The WAL may take a few more commits in space it already has.
	var refused int64
	var full error
	for i := 0; i < 2000 && full == nil; i++ {
		got, err := s.Append(readings(50+i*50, 50))
		switch {
		case errors.Is(err, ErrDiskFull):
			full = err
			refused += 50
		case err != nil:
			t.Fatalf("Append on a full disk: %v, want an error wrapping ErrDiskFull", err)
		default:
			for _, r := range got {
				appended[r.Seq] = r
			}
		}
	}
	if full == nil {
		t.Fatal("Append never failed on a full disk")
	}
	t.Logf("full: %v", full)
	for range 3 {
		if _, err := s.Append(readings(0, 10)); !errors.Is(err, ErrDiskFull) {
			t.Fatalf("Append while still full: %v, want ErrDiskFull", err)
		}
		refused += 10
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats on a full disk: %v", err)
	}
	if !st.DiskFull || st.ReadingsRefused != refused {
		t.Errorf("Stats on a full disk: DiskFull %t, ReadingsRefused %d; want true, %d", st.DiskFull, st.ReadingsRefused, refused)
	}
	pending := mustPending(t, s, 10)
	if len(pending) != 10 || pending[0].Seq != 1 {
		t.Errorf("Pending on a full disk returned %d readings from seq %d", len(pending), pending[0].Seq)
	}
	// An ack may or may not find room; if not, it says why.
	if err := s.Ack(seqsOf(pending[:5])); err != nil && !errors.Is(err, ErrDiskFull) {
		t.Errorf("Ack on a full disk: %v, want nil or ErrDiskFull", err)
	} else if err == nil {
		for _, r := range pending[:5] {
			delete(appended, r.Seq)
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	before := st.LastSeq
	got := mustAppend(t, s, readings(0, 5))
	for _, r := range got {
		appended[r.Seq] = r
	}
	if want := before + uint64(refused) + 1; got[0].Seq != want {
		t.Errorf("first seq after the disk had room = %d, want %d (%d reserved for refused readings)", got[0].Seq, want, refused)
	}
	st, err = s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.DiskFull {
		t.Error("DiskFull still set after a successful Append")
	}
	evs, err := s.PendingEvents(100)
	if err != nil {
		t.Fatal(err)
	}
	gaps := gapsOf(t, evs)
	want := Gap{FromSeq: before + 1, ToSeq: before + uint64(refused), Reason: GapDiskFull, Readings: refused}
	if len(gaps) != 1 || gaps[0].FromSeq != want.FromSeq || gaps[0].ToSeq != want.ToSeq ||
		gaps[0].Reason != want.Reason || gaps[0].Readings != want.Readings || gaps[0].FromTS == nil {
		b, _ := json.Marshal(gaps)
		t.Fatalf("gaps = %s, want one like %+v", b, want)
	}
	// Acked readings aside, every seq is pending or in the gap.
	var acked []uint64
	for seq := uint64(1); seq <= got[len(got)-1].Seq; seq++ {
		if _, ok := appended[seq]; !ok && (seq < want.FromSeq || seq > want.ToSeq) {
			acked = append(acked, seq)
		}
	}
	rs, _, _ := drain(t, s)
	if len(rs)+int(refused)+len(acked) != int(got[len(got)-1].Seq) {
		t.Errorf("%d pending + %d refused + %d acked != last seq %d", len(rs), refused, len(acked), got[len(got)-1].Seq)
	}
	// No second gap for the same readings.
	mustAppend(t, s, readings(0, 5))
	evs, err = s.PendingEvents(100)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(gapsOf(t, evs)); n != 1 {
		t.Errorf("%d gap events after a second Append, want 1", n)
	}
}

// TestOpenOnFullDisk: a disk filled by another writer while the agent was
// down must not keep the buffer from opening; the reserve file kept beside
// the database makes the room, and comes back once there is space.
func TestOpenOnFullDisk(t *testing.T) {
	t.Parallel()
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "buffer.db")
	s := openTest(t, path, Options{})
	mustAppend(t, s, readings(0, 20))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(reservePath(path)); err != nil || fi.Size() != reserveBytes {
		t.Fatalf("no %d-byte reserve file beside the database: %v", reserveBytes, err)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open on a full disk: %v", err)
	}
	defer s.Close()
	if _, err := os.Stat(reservePath(path)); !os.IsNotExist(err) {
		t.Errorf("the reserve file is still there after opening on a full disk (stat: %v)", err)
	}
	if got := mustPending(t, s, 100); len(got) != 20 {
		t.Errorf("after opening on a full disk: %d readings pending, want 20", len(got))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, readings(20, 5))
	if err := s.Ack(seqsOf(mustPending(t, s, 1))); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(reservePath(path)); err != nil || fi.Size() != reserveBytes {
		t.Errorf("the reserve file did not come back once there was room: %v", err)
	}
}
