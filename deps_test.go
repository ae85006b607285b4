package hearth_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/hearth-energy/hearth"

// TestDependencyDirection enforces the layering of DESIGN.md: the domain
// package depends on nothing, safety on the domain only, uplink and buffer
// on the domain and their own library, drivers never on uplink or buffer,
// and each library is wrapped by the one package that owns it.
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	// allowed lists, for a package prefix, the non-standard imports it may have.
	allowed := map[string][]string{
		module:                      {},
		module + "/safety":          {module, "periph.io/x/conn/v3", "periph.io/x/host/v3"},
		module + "/buffer":          {module, "github.com/mattn/go-sqlite3"},
		module + "/uplink":          {module, "github.com/eclipse/paho.mqtt.golang"},
		module + "/drivers":         {module, module + "/safety", module + "/drivers", "github.com/goburrow/modbus", "github.com/goburrow/serial", "gopkg.in/yaml.v3"},
		module + "/internal/broker": {"github.com/mochi-mqtt/server/v2"},
	}
	owners := map[string]string{
		"github.com/goburrow/modbus":          module + "/drivers",
		"github.com/eclipse/paho.mqtt.golang": module + "/uplink", // and the cloud side, below
		"github.com/mattn/go-sqlite3":         module + "/buffer",
		"github.com/mochi-mqtt/server/v2":     module + "/internal/broker",
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, imp := range imports {
			if isStd(imp) {
				continue
			}
			for lib, owner := range owners {
				if within(imp, lib) && !within(pkg, owner) && !cloudSide(pkg) {
					t.Errorf("%s imports %s, which only %s may use", pkg, imp, owner)
				}
			}
			rule, ok := ruleFor(pkg, allowed)
			if !ok {
				continue
			}
			checked++
			permitted := false
			for _, a := range allowed[rule] {
				if within(imp, a) {
					permitted = true
				}
			}
			if !permitted {
				t.Errorf("%s imports %s; %s may import only the standard library and %v", pkg, imp, rule, allowed[rule])
			}
		}
	}
	if checked == 0 {
		t.Fatal("no imports were checked: the go list output was not understood")
	}
}

// cloudSide reports whether pkg plays the operator's side of MQTT or is a
// lab tool (test harness, cloud console and fleet, benchmark report); those
// may use the MQTT client directly. The agent's packages may not.
func cloudSide(pkg string) bool {
	for _, p := range []string{"/internal/harness", "/internal/cloud", "/cmd/hearthsim", "/bench", "/faults"} {
		if within(pkg, module+p) {
			return true
		}
	}
	return false
}

func isStd(path string) bool { return !strings.Contains(strings.SplitN(path, "/", 2)[0], ".") }

func within(pkg, prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }

// ruleFor finds the most specific rule for pkg; the root rule covers only the
// root package itself.
func ruleFor(pkg string, allowed map[string][]string) (string, bool) {
	best := ""
	for p := range allowed {
		if p == module && pkg != module {
			continue
		}
		if within(pkg, p) && len(p) > len(best) {
			best = p
		}
	}
	return best, best != ""
}
