package agent

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestConfigGolden runs every testdata/config/NAME.yaml and compares the
// errors with NAME.err (empty: the config is valid).
func TestConfigGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d golden configs, want at least 4", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseConfig(filepath.Base(f), data)
			got := ""
			if err != nil {
				got = err.Error() + "\n"
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("errors differ\n got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig("testdata/config/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if d.Profile != "sunspec" || d.Transport != "tcp" || d.UnitID != 1 || d.PollInterval.D() != time.Second {
		t.Errorf("device defaults not applied: %+v", d)
	}
	if cfg.Uplink.TopicPrefix != "hearth/v1" || cfg.DataDir != DefaultDataDir || cfg.DiagSocket != DefaultDiagSocket {
		t.Errorf("top-level defaults not applied: %+v", cfg)
	}
	if cfg.Safety.SocMinPct != 10 || cfg.Safety.Fallback != "auto" {
		t.Errorf("safety defaults not applied: %+v", cfg.Safety)
	}
}

func TestConfigErrorsAreConfigErrors(t *testing.T) {
	_, err := ParseConfig("x.yaml", []byte("gateway_id: [1, 2\n"))
	var ce ConfigErrors
	if !errors.As(err, &ce) || len(ce) == 0 {
		t.Fatalf("got %v (%T), want ConfigErrors", err, err)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	if _, err := LoadConfig("../configs/hearth.example.yaml"); err != nil {
		t.Fatalf("the shipped example config does not validate:\n%v", err)
	}
}
