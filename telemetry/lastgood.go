package telemetry

import (
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// LastGood remembers, per device and point, the last value a reading
// carried and when it was taken, so that while a device is down its
// points still say what they last were and how long ago. It holds one
// entry per point the devices have ever reported, and is safe for
// concurrent use.
type LastGood struct {
	mu   sync.Mutex
	seen map[string]map[string]Sample
}

// Sample is a point's value at a time.
type Sample struct {
	Value float64
	Time  time.Time
}

// NewLastGood makes an empty LastGood.
func NewLastGood() *LastGood { return &LastGood{seen: map[string]map[string]Sample{}} }

// Observe takes one reading.
func (l *LastGood) Observe(r hearth.Reading) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pts := l.seen[r.Device]
	for name, p := range r.Points {
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
