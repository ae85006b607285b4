package schemacheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-energy/hearth/diag"
)

const schemas = "../../docs/schemas"

// TestEventCatalogue holds the event catalogue together: diag.EventTypes
// (what `hearth events --type` takes), one schema per type in
// docs/schemas/events, the type list of event.schema.json, and
// docs/events.md, whose example of each type must match its schema.
func TestEventCatalogue(t *testing.T) {
	var ev struct {
		Properties struct {
			Type struct {
				Enum []string `json:"enum"`
			} `json:"type"`
		} `json:"properties"`
		AllOf []json.RawMessage `json:"allOf"`
	}
	b, err := os.ReadFile(filepath.Join(schemas, "event.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ev.Properties.Type.Enum, diag.EventTypes) || len(ev.AllOf) != len(diag.EventTypes) {
		t.Errorf("event.schema.json lists types %v (%d branches), diag.EventTypes %v", ev.Properties.Type.Enum, len(ev.AllOf), diag.EventTypes)
	}
	files, _ := filepath.Glob(filepath.Join(schemas, "events", "*.json"))
	var have []string
	for _, f := range files {
		if n := strings.TrimSuffix(filepath.Base(f), ".json"); n != "defs" {
			have = append(have, n)
		}
	}
	want := slices.Sorted(slices.Values(diag.EventTypes))
	if !slices.Equal(have, want) {
		t.Errorf("schemas in docs/schemas/events: %v, want one per type: %v", have, want)
	}

	doc, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := regexp.MustCompile("(?s)\n### ([a-z_]+)\n(.*?)```json\n(.*?)\n```").FindAllStringSubmatch(string(doc), -1)
	var documented []string
	for _, s := range sections {
		typ, example := s[1], s[3]
		documented = append(documented, typ)
		if err := Validate(filepath.Join(schemas, "event.schema.json"), []byte(example)); err != nil {
			t.Errorf("docs/events.md: the %s example: %v", typ, err)
		}
		if !strings.Contains(example, `"type": "`+typ+`"`) {
			t.Errorf("docs/events.md: the %s example is of another type: %s", typ, example)
		}
		// Each schema refuses a field it does not define, and its type
		// without its required fields.
		var m map[string]any
		json.Unmarshal([]byte(example), &m)
		m["value"] = 1
		extra, _ := json.Marshal(m)
		if Validate(filepath.Join(schemas, "event.schema.json"), extra) == nil {
			t.Errorf("the %s schema accepts an undefined field", typ)
		}
		bare, _ := json.Marshal(map[string]any{"id": 1, "ts": "2026-11-25T10:00:00Z", "type": typ})
		if Validate(filepath.Join(schemas, "event.schema.json"), bare) == nil {
			t.Errorf("the %s schema accepts the type without its fields", typ)
		}
	}
	if !slices.Equal(documented, diag.EventTypes) {
		t.Errorf("docs/events.md documents %v, in that order; the catalogue is %v", documented, diag.EventTypes)
	}
}

// TestContractRefusesKnownBreaches: the schemas refuse what issue 16
// found the agent publishing (version 0, a power fallback, float noise),
// so the contract tests can catch them.
func TestContractRefusesKnownBreaches(t *testing.T) {
	for _, c := range []struct{ schema, doc string }{
		{"event.schema.json", `{"id":3,"ts":"2026-11-25T10:00:00Z","type":"lease_ended","lease_id":"local-x","version":0,"source":"local","mode":"idle","valid_until":"2026-11-25T10:00:00Z","fallback":"auto","reason":"cleared"}`},
		{"event.schema.json", `{"id":3,"ts":"2026-11-25T10:00:00Z","type":"lease_ended","lease_id":"local-x","source":"local","mode":"idle","valid_until":"2026-11-25T10:00:00Z","fallback":"power","reason":"cleared"}`},
		{"event.schema.json", `{"id":3,"ts":"2026-11-25T10:00:00Z","type":"clamp","rule":"max_charge_w"}`},
		{"event.schema.json", `{"id":3,"ts":"2026-11-25T10:00:00Z","type":"trip","rule":"soc_max_pct","value":96}`},
		{"state.schema.json", `{"ts":"2026-11-25T10:00:00Z","mode":"idle","safety":"ok","lease":{"id":"local-x","version":0,"valid_until":"2026-11-25T10:00:00Z","fallback":"auto","source":"local"}}`},
		{"state.schema.json", `{"ts":"2026-11-25T10:00:00Z","mode":"power","safety":"ok","applied_w":2685.0727620000002}`},
		{"state.schema.json", `{"ts":"2026-11-25T10:00:00Z","mode":"power","safety":"ok","lease":{"id":"b7e1","valid_until":"2026-11-25T10:00:00Z","fallback":"auto","source":"cloud"}}`},
		{"ack.schema.json", `{"id":"b7e1","version":42,"result":"applied","applied_w":2685.0727620000002}`},
	} {
		if Validate(filepath.Join(schemas, c.schema), []byte(c.doc)) == nil {
			t.Errorf("%s accepts %s", c.schema, c.doc)
		}
	}
	for _, c := range []struct{ schema, doc string }{
		{"state.schema.json", `{"ts":"2026-11-25T10:00:00Z","mode":"idle","safety":"ok","applied_w":2685.1,"lease":{"id":"local-x","valid_until":"2026-11-25T10:00:00Z","fallback":"auto","source":"local","remaining_s":12.5}}`},
		{"ack.schema.json", `{"id":"b7e1","version":42,"result":"clamped","reason":"max_charge_w","applied_w":-2500}`},
		{"telemetry.schema.json", `{"aggregates":[{"device":"battery","ts":"2026-11-25T10:00:00Z","seq_from":81234,"seq_to":81470,"n":60,"clock":"synced","points":{"soc_pct":{"min":72.1,"avg":72.4,"max":72.5,"n":60},"temp_c":{"n":0,"q":{"comm_error":60}}}}]}`},
	} {
		if err := Validate(filepath.Join(schemas, c.schema), []byte(c.doc)); err != nil {
			t.Errorf("%s refuses %s: %v", c.schema, c.doc, err)
		}
	}
}
