package hearth_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/hearth-energy/hearth"

// Library import paths, by the name the rules use.
const (
	modbus     = "github.com/goburrow/modbus"
	paho       = "github.com/eclipse/paho.mqtt.golang"
	sqlite     = "github.com/mattn/go-sqlite3"
	mochi      = "github.com/mochi-mqtt/server/v2"
	periphConn = "periph.io/x/conn/v3"
	periphHost = "periph.io/x/host/v3"
	yaml       = "gopkg.in/yaml.v3"
	jsonschema = "github.com/santhosh-tekuri/jsonschema/v6"
	gofuse     = "github.com/hanwen/go-fuse/v2"
)

// rules gives, for every package of the module (by its path inside the
// module, "." for the root), the only non-standard packages it may import
// directly: module packages by their path inside the module, libraries by
// import path (a library rule covers its subpackages). A package without a
// rule is an error: a new package states where it stands.
//
// The direction is DESIGN.md's: the domain depends on nothing; safety,
// control and telemetry on the domain (and safety) only; each library is
// wrapped by the one package that owns it; only agent and the commands
// wire concrete types together. The lab side (simulator, test harness,
// cloud console, benchmarks) may use the MQTT client directly.
var rules = map[string][]string{
	".":         {},
	"safety":    {"."},
	"control":   {".", "safety"},
	"telemetry": {"."},
	"hw":        {".", periphConn, periphHost},
	"buffer":    {".", sqlite},
	"uplink":    {".", paho},
	"drivers":   {".", "safety", "drivers/rtu", "drivers/serial", "drivers/sunspec", modbus, yaml},
	"config":    {".", "drivers", "safety", "uplink", yaml},
	"diag":      {".", "drivers"},
	"agent":     {".", "buffer", "config", "control", "diag", "drivers", "hw", "runlock", "safety", "telemetry", "uplink", "web"},
	"runlock":   {},
	// web is the local page: it shows diag's records and knows the agent
	// only through the small interface it defines.
	"web": {".", "diag"},

	"drivers/rtu":         {},
	"drivers/serial":      {},
	"drivers/sunspec":     {},
	"drivers/sunspec/gen": {},
	"drivers/sim":         {".", "drivers/rtu", "drivers/serial", "drivers/sunspec"},
	"drivers/sim/ptypair": {},

	// cmd/hearth uses cgo ("C") for one thing: SIGHUP is ignored from the
	// moment the program is loaded, before the Go runtime could take it as
	// a hangup, until `hearth run` has its reload handler (hangup_cgo.go).
	"cmd/hearth":    {".", "agent", "config", "diag", "drivers", yaml, "C"},
	"cmd/hearthsim": {".", "agent", "config", "drivers/sim", "internal/broker", "internal/cloud", "uplink", paho},

	"internal/broker":      {mochi},
	"internal/cloud":       {paho},
	"internal/clocktest":   {"."},
	"internal/harness":     {"drivers/sim", "internal/schemacheck", paho},
	"internal/schemacheck": {jsonschema},
	"internal/powercut":    {gofuse},
	"bench":                {".", "buffer", "drivers/sim", "internal/harness", "internal/powercut", "uplink", paho},
	"e2e":                  {},
	"faults":               {},
}

// unreachable lists, for a package, what must not be among its transitive
// dependencies whatever its direct imports: the gateway binary carries no
// simulator, embedded broker, test harness or testing package, and the
// pure packages no I/O library.
var unreachable = map[string][]string{
	"cmd/hearth": {"drivers/sim", "internal/broker", "internal/cloud", "internal/harness", "internal/clocktest", "internal/powercut", mochi, jsonschema, gofuse, "testing"},
	".":          {sqlite, paho, modbus, periphConn, periphHost, "net", "os/exec"},
	"safety":     {sqlite, paho, modbus, periphConn, periphHost, "net", "os/exec"},
	"control":    {sqlite, paho, modbus, periphConn, periphHost, "net", "os/exec"},
	"telemetry":  {sqlite, paho, modbus, periphConn, periphHost, "net", "os/exec"},
}

type listedPackage struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Deps       []string
	Module     *struct{ Path string }
	Error      *struct{ Err string }
}

// checkDeps lists the module at dir with the go command and returns every
// breach of rules and unreachable, one line each, sorted.
func checkDeps(t *testing.T, dir string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps", "-json", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v\n%s", dir, err, stderr.String())
	}
	pkgs := map[string]listedPackage{}
	var own []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
		if p.Module != nil && p.Module.Path == module {
			own = append(own, p.ImportPath)
		}
	}
	if len(own) < len(rules)/2 {
		t.Fatalf("go list found %d packages of the module, want about %d: the output was not understood", len(own), len(rules))
	}
	// matches says whether imp is the package a rule names: a module
	// package exactly (a rule for drivers does not cover drivers/sim), a
	// library with its subpackages.
	matches := func(imp, a string) bool {
		if a == "." {
			return imp == module
		}
		if _, own := rules[a]; own {
			return imp == module+"/"+a
		}
		return within(imp, a)
	}
	rel := func(path string) string {
		if path == module {
			return "."
		}
		return strings.TrimPrefix(path, module+"/")
	}
	var bad []string
	for _, path := range own {
		p := pkgs[path]
		if p.Error != nil {
			bad = append(bad, fmt.Sprintf("%s: %s", rel(path), p.Error.Err))
			continue
		}
		allowed, ok := rules[rel(path)]
		if !ok {
			bad = append(bad, fmt.Sprintf("%s has no rule in deps_test.go: say what it may import", rel(path)))
			continue
		}
		for _, imp := range p.Imports {
			if pkgs[imp].Standard {
				continue
			}
			if !slices.ContainsFunc(allowed, func(a string) bool { return matches(imp, a) }) {
				bad = append(bad, fmt.Sprintf("%s imports %s; it may import only the standard library and %v", rel(path), rel(imp), allowed))
			}
		}
		// Transitively: everything it reaches comes through what it may
		// import.
		reach := map[string]bool{}
		for _, a := range allowed {
			for dep, q := range pkgs {
				if matches(dep, a) {
					reach[dep] = true
					for _, d := range q.Deps {
						reach[d] = true
					}
				}
			}
		}
		for _, d := range p.Deps {
			if !pkgs[d].Standard && !reach[d] {
				bad = append(bad, fmt.Sprintf("%s reaches %s, which none of %v brings", rel(path), rel(d), allowed))
			}
		}
		for _, u := range unreachable[rel(path)] {
			for _, d := range p.Deps {
				if matches(d, u) {
					bad = append(bad, fmt.Sprintf("%s reaches %s, which it must never depend on", rel(path), rel(d)))
					break
				}
			}
		}
	}
	sort.Strings(bad)
	return slices.Compact(bad)
}

func within(pkg, prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }

// TestDependencyRules enforces rules and unreachable on the module.
func TestDependencyRules(t *testing.T) {
	t.Parallel()
	for _, b := range checkDeps(t, ".") {
		t.Error(b)
	}
	for name := range rules {
		if _, err := os.Stat(name); err != nil {
			t.Errorf("rule for %s, which does not exist: remove it", name)
		}
	}
}

// TestDependencyRulesCatchPlantedImports proves the check can fail: in a
// copy of the module it plants a forbidden direct import, a forbidden
// import through a package of its own, and a package without a rule, and
// expects each to be reported.
func TestDependencyRulesCatchPlantedImports(t *testing.T) {
	t.Parallel()
	dir := copyModule(t)
	plant := func(file, src string) {
		t.Helper()
		path := filepath.Join(dir, file)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// safety imports buffer and uplink: the breach that once passed.
	plant("safety/zz_planted.go", "package safety\n\nimport (\n\t_ \""+module+"/buffer\"\n\t_ \""+module+"/uplink\"\n)\n")
	// telemetry reaches SQLite through a new package with no rule.
	plant("internal/planted/planted.go", "package planted\n\nimport _ \""+module+"/buffer\"\n")
	plant("telemetry/zz_planted.go", "package telemetry\n\nimport _ \""+module+"/internal/planted\"\n")
	// The gateway binary picks up the simulator through an allowed import.
	plant("diag/zz_planted.go", "package diag\n\nimport _ \""+module+"/drivers/sim\"\n")

	got := checkDeps(t, dir)
	for _, want := range []string{
		"safety imports buffer;",
		"safety imports uplink;",
		"safety reaches " + sqlite,
		"internal/planted has no rule",
		"telemetry imports internal/planted;",
		"telemetry reaches buffer, which none of",
		"diag imports drivers/sim;",
		"cmd/hearth reaches drivers/sim, which it must never depend on",
	} {
		if !slices.ContainsFunc(got, func(b string) bool { return strings.HasPrefix(b, want) }) {
			t.Errorf("planted breach not reported: want a line starting %q; got:\n%s", want, strings.Join(got, "\n"))
		}
	}
}

// copyModule copies the module's tracked and untracked source files to a
// temporary folder.
func copyModule(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("list the module's files: %v", err)
	}
	dir := t.TempDir()
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // deleted in the work tree
		}
		path := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
