package schemacheck

import (
	"os"
	"path/filepath"
	"testing"
)

func TestValidateAcceptsAndRejects(t *testing.T) {
	dir := t.TempDir()
	schema := filepath.Join(dir, "s.json")
	os.WriteFile(schema, []byte(`{"type":"object","required":["a"],"properties":{"a":{"type":"integer"}}}`), 0o644)
	if err := Validate(schema, []byte(`{"a": 3}`)); err != nil {
		t.Errorf("valid document rejected: %v", err)
	}
	if err := Validate(schema, []byte(`{"a": "x"}`)); err == nil {
		t.Errorf("document with a string for an integer was accepted")
	}
	if err := Validate(schema, []byte(`{}`)); err == nil {
		t.Errorf("document missing a required field was accepted")
	}
}
