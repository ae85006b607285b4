package buffer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
)

// benchBatch is n readings of 8 points each, as from a battery or
// inverter poll.
func benchBatch(n int) []hearth.Reading {
	batch := make([]hearth.Reading, n)
	for i := range batch {
		points := make(map[string]hearth.Point, 8)
		for p := range 7 {
			points[fmt.Sprintf("point%d_w", p)] = hearth.V(float64(i*10+p) + 0.25)
		}
		points["temp_c"] = hearth.Q(hearth.QualityCommError)
		batch[i] = hearth.Reading{
			Device: fmt.Sprintf("dev%d", i%4), Time: t0, Clock: hearth.ClockSynced,
			Boot: "9f2c4a1b7e3d5f60", MonoMS: int64(i), Points: points,
		}
	}
	return batch
}

// BenchmarkAppend appends batches of readings of 8 points each, one
// transaction per batch, to a real file, and reports readings per second
// and the bytes the process caused to be written to storage per reading
// (from /proc/self/io, WAL and checkpoints included, measured after Close)
// next to the size of a reading's JSON on the wire. A batch of 4 is one
// poll cycle of four devices; 100 is a commit per second at 100 readings/s.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{4, 20, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			dir := b.TempDir()
			s, err := Open(filepath.Join(dir, "buffer.db"), Options{MaxBytes: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			batch := benchBatch(size)
			wire := 0
			for _, r := range batch {
				r.Seq = 123456789
				j, err := json.Marshal(r)
				if err != nil {
					b.Fatal(err)
				}
				wire += len(j)
			}
			written := processWriteBytes()
			start := time.Now()
			n := 0
			for b.Loop() {
				if _, err := s.Append(batch); err != nil {
					b.Fatal(err)
				}
				n += size
			}
			elapsed := time.Since(start)
			if err := s.Close(); err != nil { // checkpoints: the main file's writes count too
				b.Fatal(err)
			}
			written = processWriteBytes() - written
			fi, err := os.Stat(filepath.Join(dir, "buffer.db"))
			if err != nil {
				b.Fatal(err)
			}
			payload := float64(wire) / float64(size)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "readings/s")
			b.ReportMetric(float64(written)/float64(n), "written-B/reading")
			b.ReportMetric(float64(fi.Size())/float64(n), "file-B/reading")
			b.ReportMetric(payload, "payload-B/reading")
		})
	}
}

// BenchmarkCompact measures a compaction pass of compactChunk readings into
// per-minute aggregates (four devices at 1 Hz), setup excluded.
func BenchmarkCompact(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "buffer.db"), Options{Now: func() time.Time { return t0.Add(1000 * time.Hour) }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := benchBatch(compactChunk)
	n := 0
	for b.Loop() {
		b.StopTimer()
		for i := range batch {
			batch[i].Time = t0.Add(time.Duration(n+i) * time.Second / 4)
		}
		if _, err := s.Append(batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if did, err := s.compactOldest(b.Context()); err != nil || !did {
			b.Fatalf("compact: %t, %v", did, err)
		}
		n += len(batch)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
}

// BenchmarkReserveSeqs reserves blocks of 1,024 seqs, as the agent does,
// on a real file: each is a commit synced to the medium (run with -tags
// nofsync for the same commit unsynced, which is what the sync costs).
func BenchmarkReserveSeqs(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "buffer.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		if _, _, err := s.ReserveSeqs(1024); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStateSetMeta writes one key of the lease state, as the control
// loop does for each lease it accepts: write-temp, fsync, rename, fsync
// of the directory (and the unsynced copy into the buffer).
func BenchmarkStateSetMeta(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(filepath.Join(dir, "buffer.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	st, err := OpenState(filepath.Join(dir, "state.json"), s, nil)
	if err != nil {
		b.Fatal(err)
	}
	v := 0
	for b.Loop() {
		v++
		if err := st.SetMeta("safety.highest_version", fmt.Sprint(v)); err != nil {
			b.Fatal(err)
		}
	}
}
