package main

import (
	"encoding/json"
	"io"
)

// writeJSON prints v as indented JSON, the stable --json form.
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
