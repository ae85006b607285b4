package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/cloud"
	"github.com/hearth-energy/hearth/uplink"
)

// demoView prints what one gateway publishes for a person reading along:
// one aligned line per reading with units, the ack and events in words,
// and the agent's state only when it changes. It runs until ctx ends.
func demoView(ctx context.Context, brokerURL, prefix, gateway string, w io.Writer) error {
	v := &viewPrinter{w: w}
	return follow(ctx, brokerURL, prefix, gateway, "demo-view", cloud.Options{}, func(_, kind string, m cloud.Message) {
		v.message(kind, m.Payload)
	})
}

type viewPrinter struct {
	mu        sync.Mutex
	w         io.Writer
	lastState string
}

func (v *viewPrinter) line(t time.Time, what, format string, a ...any) {
	fmt.Fprintf(v.w, "%s  %-8s %s\n", t.Local().Format("15:04:05"), what, fmt.Sprintf(format, a...))
}

// message prints one published message of the given kind (the topic
// after the gateway id).
func (v *viewPrinter) message(kind string, payload []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	switch kind {
	case "telemetry", "telemetry/backfill":
		batch, err := uplink.DecodeTelemetry(payload)
		if err != nil {
			v.line(now, "error", "telemetry that does not decode: %v", err)
			return
		}
		for _, r := range batch.Readings {
			v.line(r.Time, "reading", "%-8s SoC %6s %%   battery %6s W   AC %6s W   grid %6s Hz   cell max %6s V",
				r.Device, cell(r.Points, "soc_pct", 1), cell(r.Points, "power_w", 0), cell(r.Points, "ac_power_w", 0),
				cell(r.Points, "ac_hz", 2), cell(r.Points, "cell_v_max", 3))
		}
	case "setpoint/ack":
		var a hearth.Ack
		if err := json.Unmarshal(payload, &a); err != nil {
			v.line(now, "error", "ack that does not decode: %v", err)
			return
		}
		v.line(now, "ack", "%s", ackWords(a))
	case "setpoint":
		v.line(now, "cloud", "sent a setpoint lease (%d bytes)", len(payload))
	case "state":
		var s hearth.State
		if err := json.Unmarshal(payload, &s); err != nil {
			v.line(now, "error", "state that does not decode: %v", err)
			return
		}
		words := stateWords(s)
		if words == v.lastState {
			return
		}
		v.lastState = words
		v.line(now, "state", "%s", words)
	case "status":
		var s struct {
			State   string `json:"state"`
			Version string `json:"version"`
			Devices []struct {
				Name string `json:"name"`
			} `json:"devices"`
		}
		if err := json.Unmarshal(payload, &s); err != nil {
			v.line(now, "error", "status that does not decode: %v", err)
			return
		}
		var names []string
		for _, d := range s.Devices {
			names = append(names, d.Name)
		}
		if s.State != "online" {
			v.line(now, "status", "agent %s", s.State)
			return
		}
		v.line(now, "status", "agent online, version %s, devices: %s", s.Version, strings.Join(names, ", "))
	case "event":
		var e map[string]any
		if err := json.Unmarshal(payload, &e); err != nil {
			v.line(now, "error", "event that does not decode: %v", err)
			return
		}
		v.line(now, "event", "%s", eventWords(e))
	default:
		v.line(now, kind, "%d bytes", len(payload))
	}
}

// ackWords says what an ack means.
func ackWords(a hearth.Ack) string {
	var b strings.Builder
	fmt.Fprintf(&b, "lease %s v%d: %s", a.ID, a.Version, a.Result)
	if a.Reason != "" {
		fmt.Fprintf(&b, " by %s", a.Reason)
	}
	if a.AppliedW != nil {
		fmt.Fprintf(&b, ", applying %.0f W", float64(*a.AppliedW))
	}
	if a.HoldS != nil {
		fmt.Fprintf(&b, ", held for %.0f s", *a.HoldS)
	}
	if a.KeyID != "" {
		fmt.Fprintf(&b, ", signed by %s", a.KeyID)
	}
	if a.Detail != "" {
		fmt.Fprintf(&b, " (%s)", a.Detail)
	}
	return b.String()
}

// stateWords says the agent's state without its time stamp and without
// the power it commands (which moves while the battery ramps, and which
// the readings show), so that a state prints only when it changes.
func stateWords(s hearth.State) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s", s.Mode)
	if s.Lease != nil {
		fmt.Fprintf(&b, ", lease %s v%d (%s) until %s", s.Lease.ID, s.Lease.Version, s.Lease.Source, s.Lease.ValidUntil.Local().Format("15:04:05"))
	}
	if s.Safety == "ok" || s.Safety == "" {
		b.WriteString(", safety ok")
	} else {
		fmt.Fprintf(&b, ", safety held by %s", s.Safety)
	}
	if len(s.Trips) > 0 {
		fmt.Fprintf(&b, " (tripped: %s)", strings.Join(s.Trips, ", "))
	}
	if len(s.NotEffective) > 0 {
		fmt.Fprintf(&b, ", not following: %s", strings.Join(s.NotEffective, ", "))
	}
	if s.Clock != "" {
		fmt.Fprintf(&b, ", clock %s", s.Clock)
	}
	return b.String()
}

// eventWords says an event: the common ones in a sentence, the others
// as their type and fields.
func eventWords(e map[string]any) string {
	str := func(k string) string {
		switch x := e[k].(type) {
		case nil:
			return "?"
		case float64:
			return fmt.Sprintf("%g", x)
		default:
			return fmt.Sprint(x)
		}
	}
	typ := str("type")
	switch typ {
	case "uplink_connected":
		return "connected to the broker " + str("broker")
	case "clamped":
		return fmt.Sprintf("lease %s v%s asked %s W, limited to %s W on %s by %s",
			str("lease_id"), str("version"), str("requested_w"), str("allowed_w"), str("device"), str("rule"))
	case "lease_started":
		return fmt.Sprintf("lease %s v%s started: %s %s W for %s s, then %s",
			str("lease_id"), str("version"), str("mode"), str("power_w"), str("hold_s"), str("fallback"))
	}
	var keys []string
	for k := range e {
		if k != "type" && k != "id" && k != "ts" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(strings.ReplaceAll(typ, "_", " "))
	for i, k := range keys {
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s %s", sep, k, str(k))
	}
	return b.String()
}
