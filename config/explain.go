package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// typeRe matches yaml's "cannot unmarshal !!str `one` into int".
var typeRe = regexp.MustCompile("^cannot (?:unmarshal|use) (?:!!(\\w+)|string)(?: `?(.*?)`?)? into (\\S+)$")

// explainTypeErrors rewrites the decoder's type errors to name the key at
// their line and the form the key takes: "devices[0].unit_id: want an
// integer, got `one`".
func explainTypeErrors(errs Errors, lines map[string]int) {
	at := map[int]string{}
	// The key on a line: the deepest path that ends in a key, not in a
	// list index ("safety.soc_min_pct", not "safety.soc_min_pct[0]").
	for path, l := range lines {
		if !strings.HasSuffix(path, "]") && len(path) > len(at[l]) {
			at[l] = path
		}
	}
	for i, e := range errs {
		m := typeRe.FindStringSubmatch(e.Msg)
		if m == nil {
			continue
		}
		got := "`" + m[2] + "`"
		switch {
		case m[2] != "":
		case m[1] == "seq":
			got = "a list"
		case m[1] == "map":
			got = "a section"
		default:
			got = "a " + m[1]
		}
		msg := fmt.Sprintf("want %s, got %s", formOf(m[3]), got)
		if key := at[e.Line]; key != "" {
			msg = key + ": " + msg
		}
		errs[i].Msg = msg
	}
}

// formOf names, for a person, the form a Go type takes in YAML.
func formOf(goType string) string {
	switch t := strings.TrimPrefix(goType, "*"); {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a text"
	case strings.HasPrefix(t, "[]"):
		return "a list (- item lines)"
	case strings.HasPrefix(t, "map"), strings.Contains(t, "."):
		return "a section of key: value lines"
	}
	return "a " + goType
}

// keysOf returns the YAML keys of the config type named (as yaml names it,
// "config.DeviceConfig"), found among Config's fields at any depth.
func keysOf(typeName string) []string {
	var found []string
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		var keys []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "-" || !f.IsExported() {
				continue
			}
			if tag != "" {
				keys = append(keys, tag)
			}
			walk(f.Type)
		}
		if t.String() == typeName {
			found = keys
		}
	}
	walk(reflect.TypeOf(Config{}))
	return found
}

// nearestKey returns the key of keys closest to k, when a typo away (an
// edit distance of at most 2, or 1 for short keys); "" otherwise.
func nearestKey(k string, keys []string) string {
	best, bestD := "", 3
	if len(k) <= 4 {
		bestD = 2
	}
	for _, c := range keys {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
