package harness

import (
	"strings"
	"testing"
)

// TestContractCheck: payloads that break their schema, repeated events
// and unchanged states are reported; an allowance lets pass only what it
// names; redeliveries and reconnects are no repeats.
func TestContractCheck(t *testing.T) {
	m := func(topic, payload string) Message {
		return Message{Topic: "hearth/v1/gw/" + topic, Payload: []byte(payload)}
	}
	good := m("event", `{"id":1,"ts":"2026-11-25T10:00:00Z","type":"trip","rule":"soc_max_pct"}`)
	state := m("state", `{"ts":"2026-11-25T10:00:00Z","mode":"auto","safety":"ok"}`)
	online := m("status", `{"state":"online","gateway":"gw","ts":"2026-11-25T10:00:00Z","devices":[],"heartbeat_s":60,"telemetry":{"format":"lean","lean":1,"window_ms":5000}}`)
	msgs := []Message{
		good, good, // redelivered: same id
		m("event", `{"id":2,"ts":"2026-11-25T10:00:00.001Z","type":"trip","rule":"soc_max_pct"}`), // repeated
		m("event", `{"id":3,"ts":"2026-11-25T10:00:05Z","type":"trip","rule":"soc_max_pct","value":3}`),
		m("state", `{"ts":"2026-11-25T10:00:00Z","mode":"power","safety":"ok","applied_w":1.23}`),
		state, state, online, state, // the second is a repeat; the third follows a reconnect
		m("event", `{"id":4,"ts":"2026-11-25T10:00:09Z","type":"clamped","lease_id":"b7e1","version":42,"rule":"max_charge_w","allowed_w":-2500,"requested_w":-3000}`),
		m("event", `{"id":5,"ts":"2026-11-25T10:00:09.001Z","type":"clamped","lease_id":"b7e1","version":42,"rule":"max_charge_w","allowed_w":-2500}`), // the same clamp
		m("setpoint", `{"hostile":true}`), // the cloud's, not checked
		m("frob", `{}`),
	}
	bad, known := NewContract(SchemaDir()).Check(msgs)
	want := []string{"duplicate:event:trip", "event:trip on hearth/v1/gw/event", "state on hearth/v1/gw/state", "duplicate:state", "duplicate:event:clamped", "unknown topic"}
	if len(bad) != len(want) || len(known) != 0 {
		t.Fatalf("got %d violations, %d known:\n%s\nwant %d: %v", len(bad), len(known), strings.Join(bad, "\n"), len(want), want)
	}
	for i, w := range want {
		if !strings.HasPrefix(bad[i], w) {
			t.Errorf("violation %d: %q, want one starting %q", i, bad[i], w)
		}
	}
	c := NewContract(SchemaDir(), KnownViolation{Kind: "state", Match: "multipleOf", Fix: "rounding"}, KnownViolation{Kind: "duplicate:state", Fix: "dedupe"},
		KnownViolation{Kind: "event:trip", Match: "never matches", Fix: "x"})
	bad, known = c.Check(msgs)
	if len(bad) != 4 || len(known) != 2 || !strings.Contains(known[0], "fix: rounding") {
		t.Errorf("with allowances: %d violations, known %q", len(bad), known)
	}
	if u := c.Unused(); len(u) != 1 || u[0].Fix != "x" {
		t.Errorf("Unused() = %v, want the allowance that matched nothing", u)
	}
	// A payload that breaks an allowed rule and another is not let pass.
	both := m("state", `{"ts":"2026-11-25T10:00:00Z","mode":"turbo","safety":"ok","applied_w":1.23}`)
	if bad, _ := c.Check([]Message{both}); len(bad) != 1 {
		t.Errorf("a state with noise and a bad mode passed: %v", bad)
	}
}
