package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/schemacheck"
)

// contractSchemas maps what follows {prefix}/{gateway}/ in a topic the
// gateway publishes on to the schema its payloads must match. Setpoints
// (cloud to gateway) are left out: tests send hostile ones on purpose.
var contractSchemas = map[string]string{
	"telemetry":          "telemetry.schema.json",
	"telemetry/backfill": "telemetry.schema.json",
	"event":              "event.schema.json",
	"status":             "status.schema.json",
	"state":              "state.schema.json",
	"setpoint/ack":       "ack.schema.json",
	"check":              "check.schema.json",
}

// KnownViolation is a breach of the contract that a Contract lets pass
// because it is known and being fixed elsewhere: a message of Kind (the
// topic's kind, "event:TYPE" for events, or "duplicate:event:TYPE" and
// "duplicate:state" for the repeat checks) whose violation text contains
// Match. Fix says where it is fixed. An allowance that nothing matched in
// a whole run is reported by Contract.Unused, so the list shrinks as the
// fixes land.
type KnownViolation struct {
	Kind, Match, Fix string
}

// PendingControlFixes are the breaches of the MQTT contract that issue 16
// found in what package control publishes, and that are being fixed in
// control by its owner: local leases carry version 0 and a lease_ended of
// a local override names "power" as its fallback; one setpoint yields two
// clamped events a millisecond apart; state is republished byte-identical;
// powers carry float noise instead of being rounded to 0.1 W. Every other
// breach fails the test. Remove an entry when its fix lands (Unused lists
// those that no longer occur).
var PendingControlFixes = []KnownViolation{}

// repeatWindow is how close together two events with the same content
// are a fault: one cause recorded twice. An agent restarted (killed, or
// its power cut) may record what the last one did, but not this soon.
const repeatWindow = 250 * time.Millisecond

// Contract holds what gateways publish to the MQTT contract: every
// payload to its JSON Schema in docs/schemas (events to their type's),
// no event repeated with the same content within repeatWindow, no state
// republished unchanged on one connection. It is safe for concurrent use;
// one Contract may serve a whole test binary, to report Unused at the end.
type Contract struct {
	dir   string
	allow []KnownViolation

	mu      sync.Mutex
	used    map[int]int    // allow index → breaches it let pass
	checked map[string]int // kind → messages validated
}

// NewContract checks against the schemas in dir (docs/schemas), letting
// the allow list pass.
func NewContract(dir string, allow ...KnownViolation) *Contract {
	return &Contract{dir: dir, allow: allow, used: map[int]int{}, checked: map[string]int{}}
}

// SchemaDir is the module's docs/schemas, found from this file.
func SchemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "docs", "schemas")
}

// Watch makes t fail at its end, listing every breach of the contract in
// what rec received by then (the breaches allowed are logged).
func (c *Contract) Watch(t testing.TB, rec *Recorder) {
	t.Helper()
	t.Cleanup(func() {
		bad, known := c.Check(rec.Messages())
		for _, k := range known {
			t.Logf("contract: known, being fixed: %s", k)
		}
		for _, b := range bad {
			t.Errorf("contract: %s", b)
		}
	})
}

// Check validates msgs, in arrival order, and returns the breaches, one
// line each: those not allowed, and those allowed (with their fix).
func (c *Contract) Check(msgs []Message) (violations, known []string) {
	report := func(kind, topic string, payload []byte, problem string) {
		line := fmt.Sprintf("%s on %s: %s\n    payload: %s", kind, topic, oneLine(problem), clipBytes(payload, 400))
		if i := c.allowed(kind, problem); i >= 0 {
			known = append(known, line+"\n    fix: "+c.allow[i].Fix)
			return
		}
		violations = append(violations, line)
	}
	type seenEvent struct {
		ts   time.Time
		body string
	}
	lastEvent := map[string]seenEvent{} // gateway + type → the last one
	seenID := map[string]bool{}         // gateway + id: a redelivery is no repeat
	lastState := map[string][]byte{}    // gateway → last state on this connection
	for _, m := range msgs {
		gw, kind, ok := splitTopic(m.Topic)
		if !ok {
			continue
		}
		schema, ok := contractSchemas[kind]
		if !ok {
			report("unknown topic", m.Topic, m.Payload, "a gateway published on a topic the contract does not have")
			continue
		}
		c.count(kind)
		full := kind
		var ev struct {
			ID   uint64    `json:"id"`
			TS   time.Time `json:"ts"`
			Type string    `json:"type"`
		}
		if kind == "event" && json.Unmarshal(m.Payload, &ev) == nil && ev.Type != "" {
			full = "event:" + ev.Type
		}
		doc := m.Payload
		if strings.HasPrefix(kind, "telemetry") {
			// Lean (the default) or {"readings"}, gzipped or not.
			var err error
			if doc, schema, err = schemacheck.Telemetry(m.Payload); err != nil {
				report(full, m.Topic, m.Payload, err.Error())
				continue
			}
		}
		if err := schemacheck.Validate(filepath.Join(c.dir, schema), doc); err != nil {
			report(full, m.Topic, doc, err.Error())
		}
		switch {
		case kind == "status" && bytes.Contains(m.Payload, []byte(`"online"`)):
			// A new connection republishes its state, and a new agent
			// (a restart) records its own events, which may say what
			// the last one's did.
			delete(lastState, gw)
			for k := range lastEvent {
				if strings.HasPrefix(k, gw+"/") {
					delete(lastEvent, k)
				}
			}
		case kind == "state" && !m.Retained:
			if bytes.Equal(lastState[gw], m.Payload) {
				report("duplicate:state", m.Topic, m.Payload, "the same state published twice on one connection")
			}
			lastState[gw] = m.Payload
		case kind == "event" && ev.Type != "":
			idKey := fmt.Sprintf("%s/%d", gw, ev.ID)
			if seenID[idKey] {
				continue // delivered again: at least once
			}
			seenID[idKey] = true
			body := eventBody(ev.Type, m.Payload)
			key := gw + "/" + ev.Type
			if prev, ok := lastEvent[key]; ok && prev.body == body && ev.TS.Sub(prev.ts) < repeatWindow {
				report("duplicate:"+full, m.Topic, m.Payload, fmt.Sprintf("the same %s event again %s later", ev.Type, ev.TS.Sub(prev.ts)))
			}
			lastEvent[key] = seenEvent{ev.TS, body}
		}
	}
	return violations, known
}

// Checked returns how many messages of each kind were validated.
func (c *Contract) Checked() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.checked {
		out[k] = v
	}
	return out
}

// Unused returns the allowances that let nothing pass so far: fixed, and
// to be removed from the list.
func (c *Contract) Unused() []KnownViolation {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []KnownViolation
	for i, a := range c.allow {
		if c.used[i] == 0 {
			out = append(out, a)
		}
	}
	return out
}

// Summary is one line saying what was validated and what was let pass.
func (c *Contract) Summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := make([]string, 0, len(c.checked))
	for k, n := range c.checked {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	passed := 0
	for _, n := range c.used {
		passed += n
	}
	return fmt.Sprintf("contract: validated %s; %d known breaches let pass", strings.Join(kinds, ", "), passed)
}

func (c *Contract) allowed(kind, problem string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range c.allow {
		if a.Kind == kind && strings.Contains(problem, a.Match) && c.onlyMatches(a, problem) {
			// Every allowance this breach needs counts as used.
			for j, b := range c.allow {
				if b.Kind == kind && strings.Contains(problem, b.Match) {
					c.used[j]++
				}
			}
			return i
		}
	}
	return -1
}

// onlyMatches reports whether every failing location of a schema error
// is covered by some allowance of the same kind: a payload breaking an
// allowed rule and another one is not let pass.
func (c *Contract) onlyMatches(a KnownViolation, problem string) bool {
	for _, line := range strings.Split(problem, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "- at '/") {
			continue
		}
		ok := false
		for _, b := range c.allow {
			if b.Kind == a.Kind && b.Match != "" && strings.Contains(line, b.Match) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (c *Contract) count(kind string) {
	c.mu.Lock()
	c.checked[kind]++
	c.mu.Unlock()
}

// splitTopic takes hearth/v1/GW/KIND (any prefix of two levels) apart.
func splitTopic(topic string) (gateway, kind string, ok bool) {
	parts := strings.SplitN(topic, "/", 4)
	if len(parts) < 4 {
		return "", "", false
	}
	if parts[3] == "setpoint" {
		return "", "", false // cloud to gateway
	}
	return parts[2], parts[3], true
}

// sameEvent names, for the types that need it, the fields that make two
// events of the type one: a clamp is one per lease and rule, whether it
// carries the requested power or not.
var sameEvent = map[string][]string{
	"clamped": {"lease_id", "version", "rule"},
}

// eventBody is what the repeat check compares of an event: its fields
// but id and ts, or those sameEvent names.
func eventBody(typ string, p []byte) string {
	var m map[string]any
	if json.Unmarshal(p, &m) != nil {
		return string(p)
	}
	delete(m, "id")
	delete(m, "ts")
	if keys, ok := sameEvent[typ]; ok {
		k := map[string]any{}
		for _, f := range keys {
			k[f] = m[f]
		}
		m = k
	}
	b, _ := json.Marshal(m) // keys sorted
	return string(b)
}

func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

func clipBytes(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
