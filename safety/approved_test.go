package safety_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestApprovedCannotBeForged compiles small programs outside package
// safety, through a build overlay so nothing is written to the source
// tree, and checks that every attempt to make an Approved with a device
// and a power fails to compile, while a program using only the exported
// API builds: so the failures come from the type, not the harness.
func TestApprovedCannotBeForged(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the compiler")
	}
	_, here, _, _ := runtime.Caller(0)
	dir := filepath.Dir(here)
	const header = "package forge\n\nimport (\n\t\"github.com/hearth-energy/hearth\"\n\t\"github.com/hearth-energy/hearth/safety\"\n)\n\nvar _ hearth.Watts\n\n"
	cases := []struct {
		name, body string
		compiles   bool
	}{
		{"exported API only", "var A = safety.Approved{}.Power()\n", true},
		{"keyed literal", "var A = safety.Approved{device: \"battery\", power: 5000}\n", false},
		{"positional literal", "var A = safety.Approved{\"battery\", hearth.ModePower, 5000, \"\"}\n", false},
		{"field assignment", "func f() { var a safety.Approved; a.power = 5000; _ = a }\n", false},
		{"conversion from a look-alike", "type fake struct{ device string; mode hearth.Mode; power hearth.Watts; rule string }\nvar A = safety.Approved(fake{})\n", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			src := filepath.Join(tmp, "forge.go")
			if err := os.WriteFile(src, []byte(header+c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			virtual := filepath.Join(dir, "forge_"+strings.ReplaceAll(c.name, " ", "_"), "forge.go")
			ov, _ := json.Marshal(map[string]any{"Replace": map[string]string{virtual: src}})
			ovPath := filepath.Join(tmp, "overlay.json")
			if err := os.WriteFile(ovPath, ov, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("go", "build", "-overlay", ovPath, "-o", os.DevNull, "./"+filepath.Base(filepath.Dir(virtual)))
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			switch {
			case c.compiles && err != nil:
				t.Fatalf("control program does not build: %v\n%s", err, out)
			case !c.compiles && err == nil:
				t.Fatalf("a program outside package safety made an Approved:\n%s", c.body)
			case !c.compiles && !strings.Contains(string(out), "unexported") && !strings.Contains(string(out), "cannot convert") && !strings.Contains(string(out), "has no field or method power"):
				t.Fatalf("build failed for another reason than the unexported fields:\n%s", out)
			}
		})
	}
}
