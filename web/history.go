package web

import (
	"sort"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// HistoryWindow is how far back the page's plots reach.
const HistoryWindow = 24 * time.Hour

// The points the plots are made of. Battery power and SoC come from every
// device but the meter; PV power is the inverters' DC input (SunSpec
// DCW); grid power is the meter's point.
const (
	pointSoC     = "soc_pct"
	pointBattery = "power_w"
	pointPV      = "dc_power_w"
)

// History keeps per-minute means of the points the page plots, for the
// last HistoryWindow: at most one bucket per device and minute, so its
// memory is bounded whatever the poll rate. Minutes are placed by the
// readings' own times, and trimmed by them (those more than HistoryWindow
// older than the newest go); since that wall clock may step (an NTP sync
// a year ahead, then back), they are also trimmed on the monotonic clock
// (a minute nothing was added to for HistoryWindow goes), and at most
// maxMinutes are kept (beyond, those added to longest ago go). It is safe
// for concurrent use.
type History struct {
	meterDevice, meterPoint string
	mono                    func() time.Duration

	mu      sync.Mutex
	minutes map[int64]*minute // unix minute → its buckets
	newest  int64
}

// maxMinutes bounds the minutes History keeps: a window's worth, and the
// minute being filled.
const maxMinutes = int(HistoryWindow/time.Minute) + 2

// minute holds one minute's buckets, by device, and when (on the
// monotonic clock) one was last added to.
type minute struct {
	devs    map[string]*bucket
	touched time.Duration
}

// bucket sums one device's plotted points over one minute.
type bucket struct {
	sum map[string]float64
	n   map[string]int
}

func (b *bucket) add(name string, v float64, n int) {
	b.sum[name] += v * float64(n)
	b.n[name] += n
}

func (b *bucket) mean(name string) (float64, bool) {
	if b.n[name] == 0 {
		return 0, false
	}
	return b.sum[name] / float64(b.n[name]), true
}

// NewHistory makes a history whose grid power is meterPoint of
// meterDevice (none when meterDevice is empty). mono reads the monotonic
// clock (the time since any fixed origin, which no step of the wall clock
// moves); nil reads the process's own.
func NewHistory(meterDevice, meterPoint string, mono func() time.Duration) *History {
	if mono == nil {
		start := time.Now()
		mono = func() time.Duration { return time.Since(start) }
	}
	return &History{meterDevice: meterDevice, meterPoint: meterPoint, mono: mono, minutes: map[int64]*minute{}}
}

// plotted names the points of device that the plots use.
func (h *History) plotted(device string) []string {
	if device == h.meterDevice {
		return []string{h.meterPoint}
	}
	return []string{pointSoC, pointBattery, pointPV}
}

// Add takes one reading, at the time it carries: the plots are drawn
// against the gateway's own clock (HistoryReport.Now), so a clock that is
// not synced but steady still plots the last hours right.
func (h *History) Add(r hearth.Reading) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, name := range h.plotted(r.Device) {
		if p, ok := r.Points[name]; ok && p.Good() {
			h.bucketFor(r.Device, r.Time).add(name, p.Value, 1)
		}
	}
}

// AddAggregate takes a stored per-minute aggregate, weighted by its
// sample count.
func (h *History) AddAggregate(a hearth.Aggregate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, name := range h.plotted(a.Device) {
		if p, ok := a.Points[name]; ok && p.N > 0 {
			h.bucketFor(a.Device, a.Time).add(name, p.Avg, p.N)
		}
	}
}

// bucketFor returns the bucket of device at t, dropping minutes that have
// left the window. h.mu is held.
func (h *History) bucketFor(device string, t time.Time) *bucket {
	now := h.mono()
	m := t.Unix() / 60
	if m > h.newest {
		h.newest = m
		h.trim()
	}
	mn := h.minutes[m]
	if mn == nil {
		h.trimMono(now)
		mn = &minute{devs: map[string]*bucket{}}
		h.minutes[m] = mn
	}
	mn.touched = now
	b := mn.devs[device]
	if b == nil {
		b = &bucket{sum: map[string]float64{}, n: map[string]int{}}
		mn.devs[device] = b
	}
	return b
}

// trim drops the minutes outside the window that ends at the newest.
func (h *History) trim() {
	oldest := h.newest - int64(HistoryWindow/time.Minute)
	for m := range h.minutes {
		if m <= oldest || m > h.newest+1 {
			delete(h.minutes, m)
		}
	}
}

// trimMono makes room for one more minute on the monotonic clock, which a
// wall-clock step cannot move: a minute nothing was added to for
// HistoryWindow goes, and while more than maxMinutes-1 are kept, those
// added to longest ago go (the oldest minute first among equals). A
// newest minute that went with them (stamped by a clock that stepped
// back since) no longer anchors the window.
func (h *History) trimMono(now time.Duration) {
	dropped := false
	for m, mn := range h.minutes {
		if now-mn.touched > HistoryWindow {
			delete(h.minutes, m)
			dropped = true
		}
	}
	if over := len(h.minutes) - (maxMinutes - 1); over > 0 {
		ms := make([]int64, 0, len(h.minutes))
		for m := range h.minutes {
			ms = append(ms, m)
		}
		sort.Slice(ms, func(i, j int) bool {
			a, b := h.minutes[ms[i]], h.minutes[ms[j]]
			if a.touched != b.touched {
				return a.touched < b.touched
			}
			return ms[i] < ms[j]
		})
		for _, m := range ms[:over] {
			delete(h.minutes, m)
		}
		dropped = true
	}
	if dropped {
		h.newest = 0
		for m := range h.minutes {
			h.newest = max(h.newest, m)
		}
	}
}

// HistoryReport is the page's plot data: one entry per minute that has
// data, oldest first. A series without data in a minute is null there;
// a series no device provides is left out.
type HistoryReport struct {
	Now    time.Time             `json:"now"` // the gateway's time, which the minutes are on
	From   time.Time             `json:"from"`
	Minute []int64               `json:"t"` // start of each minute, unix milliseconds
	Series map[string][]*float64 `json:"series"`
}

// Report returns the minutes from since to now. SoC is the mean of the
// batteries', battery and PV power their sums; grid power is the meter's.
func (h *History) Report(since, now time.Time) HistoryReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	from := since.Unix() / 60
	var ms []int64
	for m := range h.minutes {
		if m >= from && m <= now.Unix()/60 {
			ms = append(ms, m)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i] < ms[j] })
	rep := HistoryReport{Now: now.UTC(), From: since.UTC(), Minute: make([]int64, len(ms)), Series: map[string][]*float64{}}
	series := func(name string) []*float64 {
		s, ok := rep.Series[name]
		if !ok {
			s = make([]*float64, len(ms))
			rep.Series[name] = s
		}
		return s
	}
	for i, m := range ms {
		rep.Minute[i] = m * 60_000
		var soc, socN, batt, pv float64
		var hasBatt, hasPV bool
		for dev, b := range h.minutes[m].devs {
			if dev == h.meterDevice {
				if v, ok := b.mean(h.meterPoint); ok {
					series("grid_w")[i] = &v
				}
				continue
			}
			if v, ok := b.mean(pointSoC); ok {
				soc, socN = soc+v, socN+1
			}
			if v, ok := b.mean(pointBattery); ok {
				batt, hasBatt = batt+v, true
			}
			if v, ok := b.mean(pointPV); ok {
				pv, hasPV = pv+v, true
			}
		}
		if socN > 0 {
			v := soc / socN
			series("soc_pct")[i] = &v
		}
		if hasBatt {
			series("battery_w")[i] = &batt
		}
		if hasPV {
			series("pv_w")[i] = &pv
		}
	}
	return rep
}
