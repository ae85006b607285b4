package hearth

import (
	"encoding/json"
	"errors"
	"math"
	"time"
)

// ClockRestamped marks a reading taken while the wall clock was unsynced
// whose Time was later recomputed from its Boot and MonoMS once the clock
// synced. Its Time is as good as a synced one, give or take the drift of the
// monotonic clock since the reading was taken.
const ClockRestamped ClockState = "restamped"

// Aggregate stands for the readings of one device within one minute that
// were compacted to save space before they could be delivered. It replaces
// exactly the readings of Device whose seq lies in [SeqFrom, SeqTo]; there
// are N of them. Seqs in that range that belong to other devices are
// accounted for elsewhere (their own readings or aggregates).
//
// On the wire (…/telemetry/backfill, {"aggregates":[…]}):
//
//	{"device":"battery","ts":"2026-11-25T10:00:00Z","seq_from":81234,"seq_to":81470,
//	 "n":60,"clock":"synced",
//	 "points":{"soc_pct":{"min":72.1,"avg":72.4,"max":72.5,"n":60},
//	           "temp_c":{"n":0,"q":{"comm_error":60}}}}
type Aggregate struct {
	Device  string    `json:"device"`
	Time    time.Time `json:"ts"` // start of the minute, UTC
	SeqFrom uint64    `json:"seq_from"`
	SeqTo   uint64    `json:"seq_to"`
	N       int       `json:"n"` // readings replaced
	// Clock is the clock state shared by every reading replaced: readings
	// of different clock states are never aggregated together.
	Clock  ClockState                `json:"clock"`
	Points map[string]PointAggregate `json:"points"`
}

// PointAggregate summarises one point over the readings of an Aggregate.
// Values are aggregated; qualities are counted, never averaged: a sample
// without a value adds one to Q[its quality] and nothing to Min, Avg, Max
// or N. N plus the sum of Q is the number of readings that carried the
// point, at most the Aggregate's N.
type PointAggregate struct {
	Min float64 // smallest value; meaningless when N is 0
	Avg float64 // arithmetic mean of the values; meaningless when N is 0
	Max float64 // largest value; meaningless when N is 0
	N   int     // number of values
	Q   map[Quality]int
}

type pointAggregateJSON struct {
	Min *float64        `json:"min,omitempty"`
	Avg *float64        `json:"avg,omitempty"`
	Max *float64        `json:"max,omitempty"`
	N   int             `json:"n"`
	Q   map[Quality]int `json:"q,omitempty"`
}

// MarshalJSON encodes {"min","avg","max","n","q"}, leaving out min, avg and
// max when N is 0 and q when no sample lacked a value.
func (p PointAggregate) MarshalJSON() ([]byte, error) {
	j := pointAggregateJSON{N: p.N, Q: p.Q}
	if p.N > 0 {
		for _, v := range []float64{p.Min, p.Avg, p.Max} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, errors.New("point aggregate: value is not finite")
			}
		}
		j.Min, j.Avg, j.Max = &p.Min, &p.Avg, &p.Max
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (p *PointAggregate) UnmarshalJSON(b []byte) error {
	var j pointAggregateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	if j.N < 0 {
		return errors.New("point aggregate: negative n")
	}
	if j.N > 0 && (j.Min == nil || j.Avg == nil || j.Max == nil) {
		return errors.New("point aggregate: n > 0 without min, avg and max")
	}
	*p = PointAggregate{N: j.N, Q: j.Q}
	if j.N > 0 {
		p.Min, p.Avg, p.Max = *j.Min, *j.Avg, *j.Max
	}
	return nil
}
