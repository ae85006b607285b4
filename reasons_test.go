package hearth

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// constsOfType returns the values of the package's string constants
// declared with the named type, read from its source: a code added to
// the Go vocabulary and not to the contract fails the tests below.
func constsOfType(t *testing.T, typ string) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fs := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fs, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				v := s.(*ast.ValueSpec)
				if id, ok := v.Type.(*ast.Ident); !ok || id.Name != typ {
					continue
				}
				for _, val := range v.Values {
					lit, ok := val.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: a %s constant that is not a string literal", fs.Position(val.Pos()), typ)
					}
					s, _ := strconv.Unquote(lit.Value)
					out = append(out, s)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no constants of type %s found", typ)
	}
	slices.Sort(out)
	return out
}

// TestAckReasonsAreTheSchemas: the ack schema's reason enum is exactly
// the reason codes and the safety rules' names, so a cloud that
// validates acks knows every code the gateway can send, and a code
// added without the contract fails here.
func TestAckReasonsAreTheSchemas(t *testing.T) {
	want := append(constsOfType(t, "Reason"), constsOfType(t, "Rule")...)
	slices.Sort(want)
	raw, err := os.ReadFile("docs/schemas/ack.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Reason struct {
				Enum []string `json:"enum"`
			} `json:"reason"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(schema.Properties.Reason.Enum)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("ack.schema.json reason enum\n got  %q\n want %q", got, want)
	}
}

// TestAckReasonsAreDocumented: every reason code (not the rules, which
// docs/safety.md lists) appears in docs/mqtt.md's table of checks.
func TestAckReasonsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("docs/mqtt.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range constsOfType(t, "Reason") {
		if !strings.Contains(string(doc), "| `"+r+"` |") {
			t.Errorf("reason %q is not in docs/mqtt.md's table of checks", r)
		}
	}
}
