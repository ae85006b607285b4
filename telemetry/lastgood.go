package telemetry

import (
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// LastGood remembers, per device and point, the last value a reading
// carried and when it was taken, so that while a device is down its
// points still say what they last were and how long ago; and which points
// a device has answered for at all (with a value or another quality than
// comm_error). It holds one entry per point the devices have ever
// reported, and is safe for concurrent use.
type LastGood struct {
	mu       sync.Mutex
	seen     map[string]map[string]Sample
	answered map[string]map[string]bool
}

// Sample is a point's value at a time.
type Sample struct {
	Value float64
	Time  time.Time
}

// NewLastGood makes an empty LastGood.
func NewLastGood() *LastGood {
	return &LastGood{seen: map[string]map[string]Sample{}, answered: map[string]map[string]bool{}}
}

// Observe takes one reading.
func (l *LastGood) Observe(r hearth.Reading) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pts := l.seen[r.Device]
	for name, p := range r.Points {
		if p.Quality != hearth.QualityCommError {
			if l.answered[r.Device] == nil {
				l.answered[r.Device] = map[string]bool{}
			}
			l.answered[r.Device][name] = true
		}
		if !p.Good() {
			continue
		}
		if pts == nil {
			pts = map[string]Sample{}
			l.seen[r.Device] = pts
		}
		pts[name] = Sample{Value: p.Value, Time: r.Time}
	}
}

// Get returns the last value of device's point, if it ever had one.
func (l *LastGood) Get(device, point string) (Sample, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.seen[device][point]
	return s, ok
}

// Answered reports whether device ever answered for point, and whether it
// ever answered at all.
func (l *LastGood) Answered(device, point string) (pointSeen, deviceSeen bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answered[device][point], len(l.answered[device]) > 0
}
