package drivers

import (
	"math"
	"time"

	"github.com/hearth-energy/hearth"
)

// BudgetBurst is how many changes in one direction a budgeted device takes
// at once (a ramp to a new lease's power) before its budget paces them to
// one every MinInterval.
const BudgetBurst = 5

// writeBudget is one device's write budget: what it last wrote and the
// tokens that pace changes to flash and unknown registers. The control
// section's devices (VendorDevice) and model 124 (Storage) keep one each;
// callers serialise its use.
type writeBudget struct {
	b   Budget
	now func() time.Time
	// refresh is how often a device with a timeout of its own gets its
	// command written whatever the budget (a third of the timeout), so the
	// timeout never lapses under deferred changes; 0 for a device without
	// one.
	refresh time.Duration

	// The last command written: valid, power, when, and the rule that
	// bound it: the command after a ramp (or a clamp) ends is written
	// whatever the budget, so the device settles on the lease's power,
	// not one step short of it.
	wrote    bool
	lastW    float64
	lastAt   time.Time
	lastRule hearth.Rule
	// The tokens: BudgetBurst changes at most, one more each MinInterval,
	// so a ramp settles while a jittering target cannot write every
	// second.
	tokens   float64
	tokensAt time.Time
}

// newWriteBudget returns the budget b kept by now; timeout is the device's
// own (0: none, the device holds a command until told otherwise).
func newWriteBudget(b Budget, timeout time.Duration, now func() time.Time) *writeBudget {
	if now == nil {
		now = time.Now
	}
	return &writeBudget{b: b, now: now, refresh: timeout / 3}
}

// hold says whether the budget holds the last command instead of writing
// w, bound by rule; budgeted says the writes touch a flash or unknown
// register (others are never held). The same command again is held until
// a device with a timeout needs it refreshed (a third of the timeout after
// the last write), or, on a device without one, for the budget's
// interval. A change is held only in the same direction, not bound by a
// safety rule (the ramp included) and not the first after one, within the
// deadband or beyond the budget's pace, and on a device with a timeout
// only until it needs the refresh.
func (wb *writeBudget) hold(w float64, rule hearth.Rule, budgeted bool) bool {
	if !budgeted || !wb.wrote {
		return false
	}
	since := wb.now().Sub(wb.lastAt)
	switch {
	case w == wb.lastW && wb.refresh > 0:
		return since < wb.refresh
	case w == wb.lastW:
		// Nothing lapses on the device: the same command is re-sent only
		// at the budget's pace, in case the device lost it.
		return since < wb.b.MinInterval.D()
	case rule != "" || wb.lastRule != "":
		return false
	case wb.refresh > 0 && since >= wb.refresh:
		return false // the device's timeout needs a write
	}
	if (w > 0) != (wb.lastW > 0) || (w < 0) != (wb.lastW < 0) {
		return false
	}
	if math.Abs(w-wb.lastW) < wb.b.DeadbandW {
		return true
	}
	now := wb.now()
	if wb.tokensAt.IsZero() {
		wb.tokens = BudgetBurst
	} else {
		wb.tokens = min(BudgetBurst, wb.tokens+float64(now.Sub(wb.tokensAt))/float64(wb.b.MinInterval.D()))
	}
	wb.tokensAt = now
	if wb.tokens < 1 {
		return true
	}
	wb.tokens--
	return false
}

// written records w, bound by rule, as the command the device holds.
func (wb *writeBudget) written(w float64, rule hearth.Rule) {
	wb.wrote, wb.lastW, wb.lastAt, wb.lastRule = true, w, wb.now(), rule
}

// forget drops the last command: the next is written whatever the budget
// (after a release, or a write that failed).
func (wb *writeBudget) forget() { wb.wrote = false }
