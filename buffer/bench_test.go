package buffer

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hearth-energy/hearth"
)

// BenchmarkAppend appends batches of 100 readings of 8 points each, one
// transaction per batch, to a real file, and reports readings per second.
func BenchmarkAppend(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "buffer.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	const batchSize = 100
	batch := make([]hearth.Reading, batchSize)
	for i := range batch {
		points := make(map[string]hearth.Point, 8)
		for p := range 7 {
			points[fmt.Sprintf("point%d_w", p)] = hearth.V(float64(i*10+p) + 0.25)
		}
		points["temp_c"] = hearth.Q(hearth.QualityCommError)
		batch[i] = hearth.Reading{
			Device: "battery", Time: t0, Clock: hearth.ClockSynced,
			Boot: "9f2c", MonoMS: int64(i), Points: points,
		}
	}

	n := 0
	for b.Loop() {
		if _, err := s.Append(batch); err != nil {
			b.Fatal(err)
		}
		n += batchSize
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "readings/s")
	st, err := s.Stats()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.FileBytes)/float64(n), "bytes/reading")
}
