package agent

import (
	"context"
	"fmt"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/hearth-energy/hearth/internal/harness"
)

// newTestAgent builds an agent from a config held in memory; what it
// opened is closed when the test ends, unless Run closed it.
func newTestAgent(t *testing.T, yaml string) *Agent {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// runAgent runs a until the returned function stops it and returns what
// Run returned.
func runAgent(t *testing.T, a *Agent) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-ran })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func testAgent(t *testing.T, extra string) *Agent {
	t.Helper()
	dir := t.TempDir()
	a := newTestAgent(t, fmt.Sprintf("gateway_id: gw-m\ndata_dir: %s\ndiag_socket: %s\ndevices:\n  - name: battery\n    address: 127.0.0.1:1\nuplink:\n  broker: tcp://127.0.0.1:1\n%s",
		dir, filepath.Join(dir, "s.sock"), extra))
	t.Cleanup(a.closeAll)
	return a
}

var sampleLine = regexp.MustCompile(`^hearth_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$`)

// TestMetricsServed reads /metrics over real TCP from a fresh agent that
// has polled nothing: every line is valid exposition format and the
// values say what is true (device not up, uplink down, nothing buffered).
func TestMetricsServed(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	a := testAgent(t, "metrics_listen: "+addr+"\n")
	m, err := diag.StartMetrics(addr, diag.MetricsSource{Status: a.Status}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for i, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(line, "# ") && !sampleLine.MatchString(line) {
			t.Errorf("line %d is not a valid sample: %q", i+1, line)
		}
	}
	for _, want := range []string{
		`hearth_device_up{device="battery"} 0`,
		"hearth_uplink_connected 0",
		"hearth_buffer_pending_readings 0",
		"hearth_lease_active 0",
		"# TYPE hearth_device_polls_total counter",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	if resp, err := http.Post("http://"+addr+"/metrics", "text/plain", nil); err == nil {
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /metrics: %s, want 405: the listener is read-only", resp.Status)
		}
		resp.Body.Close()
	}
}
