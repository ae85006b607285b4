// Package schemacheck validates JSON documents against the JSON Schemas
// under docs/schemas, so tests can hold real output to its documentation.
package schemacheck

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
		// The schemas name one another by their published URLs; they are
		// read from the tree they came from.
		c.UseLoader(Loader(schemaRoot(abs)))
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

// PublishedBase is where the schemas are published: the prefix of their
// $id. A $ref to a URL under it is read from the docs/schemas tree.
const PublishedBase = "https://hearth-energy.github.io/schemas/v1/"

// Loader returns a loader for a jsonschema.Compiler that reads file URLs,
// and the schemas' published URLs (PublishedBase…) from root, the
// docs/schemas folder: the schemas name one another by those.
func Loader(root string) jsonschema.URLLoader {
	abs, err := filepath.Abs(root)
	if err != nil {
		abs = root
	}
	return jsonschema.SchemeURLLoader{"file": jsonschema.FileLoader{}, "https": published{root: abs}}
}

// published loads the schemas' published URLs from root.
type published struct{ root string }

func (p published) Load(url string) (any, error) {
	rel, ok := strings.CutPrefix(url, PublishedBase)
	if !ok || p.root == "" {
		return nil, fmt.Errorf("%s: only %s… is known here", url, PublishedBase)
	}
	f, err := os.Open(filepath.Join(p.root, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return jsonschema.UnmarshalJSON(f)
}

// schemaRoot is the docs/schemas folder that file is in, or "".
func schemaRoot(file string) string {
	for dir := filepath.Dir(file); dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		if filepath.Base(dir) == "schemas" {
			return dir
		}
	}
	return ""
}

// Telemetry returns the JSON document a telemetry payload carries and the
// schema file (under docs/schemas) it is held to: a payload starting with
// the gzip magic (1f 8b) is inflated first; a document with a "lean" key
// is the lean format (telemetry-lean.schema.json), any other the
// {"readings"} or {"aggregates"} form (telemetry.schema.json).
func Telemetry(payload []byte) (doc []byte, schema string, err error) {
	doc = payload
	if bytes.HasPrefix(payload, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, "", fmt.Errorf("gzip: %w", err)
		}
		if doc, err = io.ReadAll(io.LimitReader(zr, 64<<20)); err != nil {
			return nil, "", fmt.Errorf("gzip: %w", err)
		}
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(doc, &top) == nil {
		if _, ok := top["lean"]; ok {
			return doc, "telemetry-lean.schema.json", nil
		}
	}
	return doc, "telemetry.schema.json", nil
}
