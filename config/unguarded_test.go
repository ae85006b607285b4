package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// unguarded_max_w: a conservative default, a checked range named on its
// line, and the allow_unguarded_control warning names the cap.
func TestUnguardedMaxW(t *testing.T) {
	t.Parallel()
	const head = "gateway_id: gw-u\nuplink: {broker: \"tls://b.example:8883\"}\ndevices:\n  - name: sungrow\n    profile: sungrow_sh\n    address: \"192.0.2.1:502\"\n    allow_unguarded_control: true\n"
	cfg, err := Parse("x.yaml", []byte(head))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Devices[0].UnguardedCapW(); got != DefaultUnguardedMaxW {
		t.Errorf("default unguarded_max_w %g, want %d", got, DefaultUnguardedMaxW)
	}
	found := false
	for _, w := range cfg.Warnings() {
		if strings.Contains(w.Msg, "allow_unguarded_control") && strings.Contains(w.Msg, "unguarded_max_w (1000 W)") {
			found = true
		}
	}
	if !found {
		t.Errorf("no allow_unguarded_control warning naming the cap: %v", cfg.Warnings())
	}
	cfg, err = Parse("x.yaml", []byte(head+"    unguarded_max_w: 600\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Devices[0].UnguardedCapW(); got != 600 {
		t.Errorf("unguarded_max_w 600 read as %g", got)
	}
	for _, bad := range []string{"-5", "60000", ".nan"} {
		_, err := Parse("x.yaml", []byte(head+"    unguarded_max_w: "+bad+"\n"))
		var ce Errors
		if !errors.As(err, &ce) || len(ce) != 1 || ce[0].Line != 8 || !strings.Contains(ce[0].Msg, "devices[0].unguarded_max_w") {
			t.Errorf("unguarded_max_w %s: %v, want one error on line 8 naming devices[0].unguarded_max_w", bad, err)
		}
	}
	cfg, err = Parse("x.yaml", []byte("gateway_id: gw-u\nuplink: {broker: \"tls://b.example:8883\"}\ndevices:\n  - {name: battery, address: \"192.0.2.1:502\", unguarded_max_w: 500}\n"))
	if err != nil {
		t.Fatal(err)
	}
	found = false
	for _, w := range cfg.Warnings() {
		found = found || strings.Contains(w.Msg, "unguarded_max_w") && strings.Contains(w.Msg, "no effect")
	}
	if !found {
		t.Errorf("unguarded_max_w on a guarded device: no warning that it has no effect: %v", cfg.Warnings())
	}
}

// A Fronius GEN24 keeps model 124 in flash: a revert timeout so short that
// its refreshes alone outpace the write budget is warned about, on
// safety.revert_timeout, with the figure that fits; a longer one, or a
// device whose model 124 storage is not flash, is not.
func TestFlashModel124RefreshWarning(t *testing.T) {
	t.Parallel()
	const head = "gateway_id: gw-f\nuplink: {broker: \"tls://b.example:8883\"}\ndevices:\n  - name: gen24\n    profile: %s\n    address: \"192.0.2.1:502\"\n"
	for _, c := range []struct {
		profile, safety string
		warn            bool
	}{
		{"fronius_gen24", "", true}, // the default 60s
		{"fronius_gen24", "safety: {revert_timeout: 180s}\n", false},
		{"sunspec", "", false},
	} {
		cfg, err := Parse("x.yaml", []byte(fmt.Sprintf(head, c.profile)+c.safety))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, w := range cfg.Warnings() {
			found = found || strings.Contains(w.Msg, "keeps model 124 in flash") && strings.Contains(w.Msg, "3m0s or more")
		}
		if found != c.warn {
			t.Errorf("%s %q: warned %v, want %v: %v", c.profile, c.safety, found, c.warn, cfg.Warnings())
		}
	}
}
