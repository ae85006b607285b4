// Package schemacheck validates JSON documents against the JSON Schemas
// under docs/schemas, so tests can hold real output to its documentation.
package schemacheck

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

var (
	mu    sync.Mutex
	cache = map[string]*jsonschema.Schema{}
)

// Validate checks doc against the schema in file (a path; $refs resolve
// relative to it) and returns a readable error naming every violation.
func Validate(file string, doc []byte) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	mu.Lock()
	sch, ok := cache[abs]
	if !ok {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		sch, err = c.Compile(abs)
		if err != nil {
			mu.Unlock()
			return fmt.Errorf("compile schema %s: %w", file, err)
		}
		cache[abs] = sch
	}
	mu.Unlock()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("does not match %s: %v", filepath.Base(file), err)
	}
	return nil
}
