package uplink

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
)

// Telemetry formats (Config.TelemetryFormat, uplink.telemetry_format).
const (
	// FormatLean is the default: a batch of readings as one columnar JSON
	// document (docs/schemas/telemetry-lean.schema.json), gzip-compressed
	// when that makes it smaller. Names appear once per message, each
	// device's point names once, seq, ts and mono_ms as deltas from the
	// row before; values are JSON numbers printed exactly.
	FormatLean = "lean"
	// FormatJSON is {"readings":[…]}, one object per reading, as before.
	FormatJSON = "json"
)

// LeanVersion is the "lean" field of a lean document: the version of the
// format, raised on any change a decoder would notice.
const LeanVersion = 1

// gzipMagic starts every gzip stream; a JSON document starts with '{'.
var gzipMagic = []byte{0x1f, 0x8b}

// encodeLean encodes rs (at least one) as a lean document, compressed
// when that pays.
//
//	{"lean":1,"boot":B,"seq":S,"ts":T,"mono":M,
//	 "dev":[[NAME,[POINT,…]],…],
//	 "rows":[[dseq,dev,dts,dmono,clock,[v|q|null,…](,boot)?],…]}
//
// seq, ts (Unix milliseconds) and mono are those of the first row; each
// row carries its differences from the row before (the first: zeros). dev
// indexes "dev", whose entry lists that device's point names in the order
// of the row's values: a number is a good value, a string its quality, null
// a point the reading lacks. clock is 1 synced, 0 unsynced. A row whose boot
// differs from the document's carries its own as a seventh element.
func encodeLean(rs []hearth.Reading) []byte {
	b := make([]byte, 0, 64+len(rs)*96)
	first := rs[0]
	b = append(b, `{"lean":`...)
	b = strconv.AppendInt(b, LeanVersion, 10)
	b = append(b, `,"boot":`...)
	b = appendString(b, first.Boot)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, first.Seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, first.Time.UnixMilli(), 10)
	b = append(b, `,"mono":`...)
	b = strconv.AppendInt(b, first.MonoMS, 10)

	// Devices in order of appearance, each with the union of its point
	// names in this batch, sorted.
	var devs []string
	points := map[string][]string{}
	for _, r := range rs {
		if _, ok := points[r.Device]; !ok {
			devs = append(devs, r.Device)
			points[r.Device] = nil
		}
		for name := range r.Points {
			if !slices.Contains(points[r.Device], name) {
				points[r.Device] = append(points[r.Device], name)
			}
		}
	}
	index := map[string]int{}
	b = append(b, `,"dev":[`...)
	for i, d := range devs {
		slices.Sort(points[d])
		index[d] = i
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendString(b, d)
		b = append(b, ",["...)
		for j, p := range points[d] {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendString(b, p)
		}
		b = append(b, "]]"...)
	}
	b = append(b, `],"rows":[`...)
	prev := first
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(r.Seq-prev.Seq), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(index[r.Device]), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, r.Time.UnixMilli()-prev.Time.UnixMilli(), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, r.MonoMS-prev.MonoMS, 10)
		if r.Clock == hearth.ClockSynced {
			b = append(b, ",1,["...)
		} else {
			b = append(b, ",0,["...)
		}
		for j, name := range points[r.Device] {
			if j > 0 {
				b = append(b, ',')
			}
			p, ok := r.Points[name]
			switch {
			case !ok:
				b = append(b, "null"...)
			case p.Quality != hearth.QualityGood:
				b = appendString(b, string(p.Quality))
			case math.IsNaN(p.Value) || math.IsInf(p.Value, 0):
				b = appendString(b, string(hearth.QualityOutOfRange)) // as in the JSON format
			default:
				b = strconv.AppendFloat(b, p.Value, 'g', -1, 64)
			}
		}
		b = append(b, ']')
		if r.Boot != first.Boot {
			b = append(b, ',')
			b = appendString(b, r.Boot)
		}
		b = append(b, ']')
		prev = r
	}
	b = append(b, "]}"...)
	return compress(b)
}

// gzipWriters keeps gzip writers between messages: a new one at
// BestCompression allocates most of a megabyte.
var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestCompression)
	return w
}}

// compress returns b gzipped when that is smaller, else b.
func compress(b []byte) []byte {
	var z bytes.Buffer
	w := gzipWriters.Get().(*gzip.Writer)
	w.Reset(&z)
	w.Write(b)
	w.Close()
	gzipWriters.Put(w)
	if z.Len() < len(b) {
		return z.Bytes()
	}
	return b
}

// appendString appends s as a JSON string, as json.Marshal writes it.
// Names and qualities are plain ASCII: they are copied as they are,
// without the two allocations of json.Marshal, which takes the rest.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Telemetry is a decoded message of …/telemetry or …/telemetry/backfill.
type Telemetry struct {
	Readings   []hearth.Reading
	Aggregates []hearth.Aggregate
}

// maxInflated bounds what DecodeTelemetry inflates a compressed payload
// to: a message is at most MaxPayload; a gzip bomb must not eat memory.
const maxInflated = 64 << 20

// DecodeTelemetry decodes any telemetry payload the agent publishes:
// {"readings":[…]}, {"aggregates":[…]}, or a lean document, gzipped or
// not. It is the reference decoder of the lean format (docs/mqtt.md says
// how to write one with any language's gzip and JSON).
func DecodeTelemetry(payload []byte) (Telemetry, error) {
	if bytes.HasPrefix(payload, gzipMagic) {
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return Telemetry{}, fmt.Errorf("telemetry: gzip: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(zr, maxInflated+1))
		if err != nil {
			return Telemetry{}, fmt.Errorf("telemetry: gzip: %w", err)
		}
		if len(b) > maxInflated {
			return Telemetry{}, errors.New("telemetry: inflates beyond 64 MiB")
		}
		payload = b
	}
	var doc struct {
		Lean       *int               `json:"lean"`
		Readings   []hearth.Reading   `json:"readings"`
		Aggregates []hearth.Aggregate `json:"aggregates"`
		Boot       string             `json:"boot"`
		Seq        uint64             `json:"seq"`
		TS         int64              `json:"ts"`
		Mono       int64              `json:"mono"`
		DevRaw     json.RawMessage    `json:"dev"`
		Rows       []json.RawMessage  `json:"rows"`
	}
	if err := json.Unmarshal(payload, &doc); err != nil {
		return Telemetry{}, fmt.Errorf("telemetry: %w", err)
	}
	if doc.Lean == nil {
		return Telemetry{Readings: doc.Readings, Aggregates: doc.Aggregates}, nil
	}
	if *doc.Lean != LeanVersion {
		return Telemetry{}, fmt.Errorf("telemetry: lean version %d, want %d", *doc.Lean, LeanVersion)
	}
	var devs []struct {
		name   string
		points []string
	}
	var rawDevs [][]json.RawMessage
	if err := json.Unmarshal(doc.DevRaw, &rawDevs); err != nil {
		return Telemetry{}, fmt.Errorf("telemetry: dev: %w", err)
	}
	for i, d := range rawDevs {
		var dv struct {
			name   string
			points []string
		}
		if len(d) != 2 || json.Unmarshal(d[0], &dv.name) != nil || json.Unmarshal(d[1], &dv.points) != nil {
			return Telemetry{}, fmt.Errorf("telemetry: dev[%d]: want [name,[points]]", i)
		}
		devs = append(devs, dv)
	}
	out := Telemetry{Readings: make([]hearth.Reading, 0, len(doc.Rows))}
	seq, ts, mono := doc.Seq, doc.TS, doc.Mono
	for i, raw := range doc.Rows {
		var row []json.RawMessage
		if err := json.Unmarshal(raw, &row); err != nil || len(row) < 6 || len(row) > 7 {
			return Telemetry{}, fmt.Errorf("telemetry: rows[%d]: want [dseq,dev,dts,dmono,clock,values(,boot)]", i)
		}
		var dseq, dev, dts, dmono, clock int64
		var vals []json.RawMessage
		for j, dst := range []*int64{&dseq, &dev, &dts, &dmono, &clock} {
			if err := json.Unmarshal(row[j], dst); err != nil {
				return Telemetry{}, fmt.Errorf("telemetry: rows[%d][%d]: %w", i, j, err)
			}
		}
		if err := json.Unmarshal(row[5], &vals); err != nil {
			return Telemetry{}, fmt.Errorf("telemetry: rows[%d] values: %w", i, err)
		}
		if dev < 0 || int(dev) >= len(devs) || len(vals) != len(devs[dev].points) || (i > 0 && dseq <= 0) {
			return Telemetry{}, fmt.Errorf("telemetry: rows[%d]: device index, value count or seq order wrong", i)
		}
		seq += uint64(dseq)
		ts += dts
		mono += dmono
		r := hearth.Reading{Seq: seq, Device: devs[dev].name, Time: time.UnixMilli(ts).UTC(), Boot: doc.Boot, MonoMS: mono,
			Clock: hearth.ClockUnsynced, Points: make(map[string]hearth.Point, len(vals))}
		if clock == 1 {
			r.Clock = hearth.ClockSynced
		}
		if len(row) == 7 {
			if err := json.Unmarshal(row[6], &r.Boot); err != nil {
				return Telemetry{}, fmt.Errorf("telemetry: rows[%d] boot: %w", i, err)
			}
		}
		for j, v := range vals {
			name := devs[dev].points[j]
			switch {
			case string(v) == "null":
			case len(v) > 0 && v[0] == '"':
				var q string
				json.Unmarshal(v, &q)
				r.Points[name] = hearth.Q(hearth.Quality(q))
			default:
				f, err := strconv.ParseFloat(string(v), 64)
				if err != nil {
					return Telemetry{}, fmt.Errorf("telemetry: rows[%d] %s: %w", i, name, err)
				}
				r.Points[name] = hearth.V(f)
			}
		}
		out.Readings = append(out.Readings, r)
	}
	return out, nil
}
