package uplink

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/internal/schemacheck"
)

var (
	schemaOnce sync.Once
	schemas    map[string]*jsonschema.Schema
	schemaErr  error
)

// schema returns the compiled docs/schemas/{name}.schema.json, with
// formats (date-time) asserted.
func schema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	schemaOnce.Do(func() {
		schemas = map[string]*jsonschema.Schema{}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		c.AssertContent()
		c.UseLoader(schemacheck.Loader(filepath.Join("..", "docs", "schemas")))
		for _, n := range []string{"telemetry", "telemetry-lean", "status", "state", "event", "setpoint", "setpoint-envelope", "ack"} {
			abs, err := filepath.Abs(filepath.Join("..", "docs", "schemas", n+".schema.json"))
			if err != nil {
				schemaErr = err
				return
			}
			s, err := c.Compile(abs)
			if err != nil {
				schemaErr = err
				return
			}
			schemas[n] = s
		}
	})
	if schemaErr != nil {
		t.Fatalf("compile schemas: %v", schemaErr)
	}
	return schemas[name]
}

func validate(t *testing.T, name string, payload []byte) error {
	t.Helper()
	if name == "telemetry" {
		doc, file, err := schemacheck.Telemetry(payload)
		if err != nil {
			t.Fatalf("telemetry payload %q: %v", payload, err)
		}
		name, payload = strings.TrimSuffix(file, ".schema.json"), doc
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("%s payload %s: %v", name, payload, err)
	}
	return schema(t, name).Validate(inst)
}

func mustValidate(t *testing.T, name string, payload []byte) {
	t.Helper()
	if err := validate(t, name, payload); err != nil {
		t.Errorf("%s payload does not match docs/schemas/%s.schema.json: %s\n%v", name, name, payload, err)
	}
}

// TestPayloadsMatchSchemas publishes every kind of payload through a real
// broker and validates what a subscriber receives against docs/schemas.
func TestPayloadsMatchSchemas(t *testing.T) {
	t.Parallel()
	m := harness.StartMosquitto(t)
	proxy := harness.StartProxy(t, m.Addr())
	rec := harness.Subscribe(t, m.URL(), "hearth/v1/gw-schema/#")
	key := newKey(t, "k1")
	s := startSession(t, proxy.URL(), "gw-schema", nil, func(s *Session) {
		s.SetBirth(Birth{Version: "1.2.3", Profile: "sunspec",
			Devices: []DeviceInfo{{Name: "battery", Manufacturer: "Acme", Serial: "S1"}},
			Limits:  map[string]any{"soc_min_pct": 10, "max_charge_w": 2500}})
		s.HandleSetpoints(map[string]ed25519.PublicKey{key.id: key.pub}, nil, func(sp hearth.Setpoint, _ time.Time) hearth.Ack {
			w := hearth.Watts(-2500)
			return hearth.Ack{Result: hearth.ResultClamped, Reason: "max_charge_w", AppliedW: &w}
		})
	})
	waitConnected(t, s)
	ctx := context.Background()

	nan := reading(7)
	nan.Points["power_w"] = hearth.V(-1500)
	nan.Points["ac_hz"] = hearth.Q(hearth.QualityNotImplemented)
	if _, err := s.PublishTelemetry(ctx, []hearth.Reading{reading(1), nan}, false); err != nil {
		t.Fatal(err)
	}
	w := hearth.Watts(-3000)
	states := []hearth.State{
		{Mode: hearth.ModeAuto, Safety: "ok"},
		{Mode: hearth.ModePower, Safety: "soc_max_pct", AppliedW: &w, Trips: []string{"soc_max_pct"},
			Lease: &leaseInfoExample},
	}
	for _, st := range states {
		if err := s.PublishState(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	events := []hearth.Event{
		{ID: 1, Type: "gap", Data: json.RawMessage(`{"from_seq":10,"to_seq":99,"reason":"quota","readings":90}`)},
		{ID: 2, Type: "lease_ended", Data: json.RawMessage(`{"lease_id":"b7e1","version":42,"source":"cloud","mode":"idle",` +
			`"valid_until":"2026-11-25T10:15:00Z","fallback":"auto","reason":"expired"}`)},
		{ID: 3, Type: "trip", Data: json.RawMessage(`{"rule":"temp_c_max"}`)},
		{ID: 4, Type: "buffer_corrupt", Data: json.RawMessage(`{"path":"/var/lib/hearth/hearth.db","moved_to":"/var/lib/hearth/hearth.db.corrupt-1","reason":"database disk image is malformed"}`)},
	}
	for _, ev := range events {
		if err := s.PublishEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	harness.Publish(t, m.URL(), "hearth/v1/gw-schema/setpoint", sign(t, forGW(t, "gw-schema"), key), false)
	harness.Publish(t, m.URL(), "hearth/v1/gw-schema/setpoint", []byte(`{"bad`), false)
	rec.WaitFor(t, wait, func(msgs []harness.Message) bool { return count(msgs, "hearth/v1/gw-schema/setpoint/ack") == 2 })

	// The Will, and the clean shutdown status.
	proxy.Cut()
	rec.WaitFor(t, wait, stateIs(t, "hearth/v1/gw-schema/status", "offline"))
	waitUntil(t, "reconnect", func() bool { return s.Stats().Connects >= 2 && s.Connected() })
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.Close(cctx); err != nil {
		t.Fatal(err)
	}
	msgs := rec.WaitFor(t, wait, func(msgs []harness.Message) bool {
		m, ok := lastStatus(msgs, "hearth/v1/gw-schema/status")
		return ok && bytes.Contains(m.Payload, []byte(`"shutdown"`))
	})

	kinds := map[string]int{}
	for _, msg := range msgs {
		kind := strings.TrimPrefix(msg.Topic, "hearth/v1/gw-schema/")
		name := map[string]string{"telemetry": "telemetry", "status": "status", "state": "state", "event": "event",
			"setpoint": "", "setpoint/ack": "ack"}[kind]
		if name == "" {
			continue
		}
		kinds[name]++
		mustValidate(t, name, msg.Payload)
	}
	want := map[string]int{"telemetry": 1, "status": 4, "state": 2, "event": 4, "ack": 2} // status: online, will, online, shutdown
	for k, n := range want {
		if kinds[k] < n {
			t.Errorf("validated %d %s payloads, want ≥ %d (got %v)", kinds[k], k, n, kinds)
		}
	}
}

// leaseInfoExample is a lease as the controller reports it.
var leaseInfoExample = hearth.LeaseInfo{ID: "b7e1", Version: 42,
	ValidUntil: time.Date(2026, 11, 25, 10, 15, 0, 0, time.UTC), Fallback: hearth.ModeAuto, Source: "cloud"}

func count(msgs []harness.Message, topic string) int {
	n := 0
	for _, m := range msgs {
		if m.Topic == topic {
			n++
		}
	}
	return n
}

// TestSetpointSchemaAgreesWithParser checks that the documented schemas
// accept what ParseSetpoint accepts and refuse the schema-expressible
// hostile inputs, so the docs and the code cannot drift apart silently.
func TestSetpointSchemaAgreesWithParser(t *testing.T) {
	t.Parallel()
	good := [][]byte{[]byte(goodLease), raw("power_w", "-0"),
		lease(t, map[string]any{"mode": "idle", "power_w": nil, "fallback": "self_consumption",
			"schedule": []map[string]any{{"start": "2026-11-25T10:00:00Z", "end": "2026-11-25T10:05:00Z", "mode": "power", "power_w": 2000}}})}
	for _, p := range good {
		if _, rej := ParseSetpoint(p, Trust{Gateway: testGW}, 0); rej != nil {
			t.Fatalf("parser refuses %s: %v", p, rej)
		}
		mustValidate(t, "setpoint", p)
	}
	env := sign(t, []byte(goodLease), newKey(t, "k"))
	mustValidate(t, "setpoint-envelope", env)

	bad := [][]byte{
		lease(t, map[string]any{"force": true}), lease(t, map[string]any{"version": "42"}), lease(t, map[string]any{"version": 0}),
		lease(t, map[string]any{"mode": "turbo"}), lease(t, map[string]any{"fallback": "power"}), lease(t, map[string]any{"power_w": nil}),
		lease(t, map[string]any{"mode": "idle"}), raw("power_w", `"NaN"`), raw("power_w", "-1e12"), lease(t, map[string]any{"issued_at": "yesterday"}),
		lease(t, map[string]any{"id": ""}), lease(t, map[string]any{"valid_until": nil}),
	}
	for _, p := range bad {
		if _, rej := ParseSetpoint(p, Trust{Gateway: testGW}, 0); rej == nil {
			t.Errorf("parser accepts %s", p)
		}
		if err := validate(t, "setpoint", p); err == nil {
			t.Errorf("schema accepts %s, which the parser refuses", p)
		}
	}
}
