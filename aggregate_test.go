package hearth

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestAggregateJSON(t *testing.T) {
	a := Aggregate{
		Device: "battery", Time: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		SeqFrom: 81234, SeqTo: 81470, N: 60, Clock: ClockSynced,
		Points: map[string]PointAggregate{
			"soc_pct": {Min: 72.1, Avg: 72.4, Max: 72.5, N: 60},
			"temp_c":  {Q: map[Quality]int{QualityCommError: 58, QualityStale: 2}},
		},
	}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"device":"battery","ts":"2026-11-25T10:00:00Z","seq_from":81234,"seq_to":81470,"n":60,"clock":"synced",` +
		`"points":{"soc_pct":{"min":72.1,"avg":72.4,"max":72.5,"n":60},"temp_c":{"n":0,"q":{"comm_error":58,"stale":2}}}}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
	var got Aggregate
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("round trip = %+v, want %+v", got, a)
	}
	for _, bad := range []string{`{"n":2}`, `{"n":-1}`, `{"n":1,"min":1,"avg":1}`} {
		var p PointAggregate
		if err := json.Unmarshal([]byte(bad), &p); err == nil {
			t.Errorf("Unmarshal(%s): no error", bad)
		}
	}
}
