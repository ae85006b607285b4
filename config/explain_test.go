package config

import (
	"strings"
	"testing"
)

// TestTypeErrorsAndTypos: a value of the wrong type names its key and the
// form it takes, and a misspelt key gets the key it was probably meant to
// be, each on its line.
func TestTypeErrorsAndTypos(t *testing.T) {
	t.Parallel()
	_, err := Parse("t.yaml", []byte(`gateway_id: gw-x
data_dir: /tmp/x
diag_socket: /tmp/x/s.sock
devices:
  - name: battery
    adress: 127.0.0.1:502
    unit_id: one
safety:
  soc_min_pct: [10]
  frobnicate: 1
uplink:
  broker: tcp://127.0.0.1:1883
`))
	if err == nil {
		t.Fatal("a broken config parsed")
	}
	got := err.Error()
	for _, want := range []string{
		`t.yaml:6: unknown key "adress" (did you mean "address"?)`,
		"t.yaml:7: devices[0].unit_id: want a whole number, got `one`",
		"t.yaml:9: safety.soc_min_pct: want a number",
		`t.yaml:10: unknown key "frobnicate"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, `"frobnicate" (did you mean`) {
		t.Errorf("a key nothing like any other got a suggestion:\n%s", got)
	}
}
