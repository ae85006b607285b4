package schemacheck

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hearth-energy/hearth/diag"
)

// TestAsyncAPIDocument holds docs/asyncapi.yaml to the rest of the
// contract: an AsyncAPI 3.0 document whose channels are the topics of
// docs/mqtt.md, whose event channel carries every event type, whose
// operations name existing channels, and whose every reference resolves,
// to a part of the document or to a schema that compiles.
func TestAsyncAPIDocument(t *testing.T) {
	data, err := os.ReadFile("../../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml: %v", err)
	}
	if doc["asyncapi"] != "3.0.0" {
		t.Errorf("asyncapi %v, want 3.0.0", doc["asyncapi"])
	}
	channels, _ := doc["channels"].(map[string]any)
	var topics []string
	for name, c := range channels {
		addr, _ := c.(map[string]any)["address"].(string)
		suffix, ok := strings.CutPrefix(addr, "hearth/v1/{gateway_id}/")
		if !ok {
			t.Errorf("channel %s: address %q is not under hearth/v1/{gateway_id}/", name, addr)
		}
		topics = append(topics, suffix)
	}
	mqtt, err := os.ReadFile("../../docs/mqtt.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `…/([a-z/]+)` \\|").FindAllStringSubmatch(string(mqtt), -1) {
		documented = append(documented, m[1])
	}
	slices.Sort(topics)
	slices.Sort(documented)
	if !slices.Equal(topics, documented) || len(topics) < 8 {
		t.Errorf("channels %v; docs/mqtt.md's topic table %v", topics, documented)
	}
	ev, _ := channels["event"].(map[string]any)["messages"].(map[string]any)
	for _, typ := range diag.EventTypes {
		if _, ok := ev[typ]; !ok {
			t.Errorf("the event channel has no message for %s", typ)
		}
	}
	ops, _ := doc["operations"].(map[string]any)
	sends := 0
	for name, o := range ops {
		op := o.(map[string]any)
		if op["action"] == "send" {
			sends++
		}
		if op["action"] != "send" && op["action"] != "receive" {
			t.Errorf("operation %s: action %v", name, op["action"])
		}
	}
	if sends < 7 || len(ops) < 8 {
		t.Errorf("%d operations, %d of them send; want every topic covered", len(ops), sends)
	}
	// Every $ref resolves.
	var walk func(v any)
	refs := 0
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if r, ok := x["$ref"].(string); ok {
				refs++
				switch {
				case strings.HasPrefix(r, "#/"):
					if !pointer(doc, r[2:]) {
						t.Errorf("$ref %s does not resolve", r)
					}
				default:
					file := filepath.Join("../../docs", r)
					if err := Validate(file, []byte(`{}`)); err != nil && strings.HasPrefix(err.Error(), "compile schema") || err != nil && strings.Contains(err.Error(), "no such file") {
						t.Errorf("$ref %s: %v", r, err)
					}
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(doc)
	if refs < 50 {
		t.Errorf("only %d references checked", refs)
	}
}

// pointer reports whether the JSON pointer path (without "#/") names a
// part of doc.
func pointer(doc map[string]any, path string) bool {
	var cur any = doc
	for _, p := range strings.Split(path, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[p]; !ok {
			return false
		}
	}
	return true
}
