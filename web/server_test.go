package web

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
)

// source is an agent as the page sees it, recording the mode changes it
// is asked for.
type source struct {
	mu    sync.Mutex
	modes []string
}

func (s *source) Status() diag.StatusReport { return diag.StatusReport{Verdict: "OK"} }
func (s *source) Points(string) ([]diag.PointReport, error) {
	return []diag.PointReport{}, nil
}
func (s *source) Events(time.Time, string) []diag.EventReport { return []diag.EventReport{} }
func (s *source) History(since time.Time) HistoryReport       { return HistoryReport{} }
func (s *source) SetMode(m hearth.Mode, w *hearth.Watts, d time.Duration) (hearth.Ack, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.modes = append(s.modes, string(m)+" "+d.String())
	return hearth.Ack{Result: hearth.ResultApplied}, nil
}
func (s *source) ClearMode() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.modes = append(s.modes, "clear")
	return nil
}

func (s *source) changes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.modes...)
}

func startPage(t *testing.T, src *source, verify func(string) bool, attempts int) string {
	t.Helper()
	s, err := Start(Options{Addr: "127.0.0.1:0", Source: src, Verify: verify, Attempts: attempts, Refill: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return "http://" + s.Addr().String()
}

func post(t *testing.T, url, ctype string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestModeChangeGuards sends the changes a browser of another site, a
// guesser and a read-only page would, and expects each refused before it
// reaches the agent; the right password gets through.
func TestModeChangeGuards(t *testing.T) {
	t.Parallel()
	src := &source{}
	base := startPage(t, src, func(pw string) bool { return pw == "right" }, 3)
	good := `{"password":"right","mode":"idle","for":"5m"}`
	for _, c := range []struct {
		name  string
		ctype string
		hdr   map[string]string
		body  string
		want  int
	}{
		{"cross-site fetch", "application/json", map[string]string{"Sec-Fetch-Site": "cross-site"}, good, http.StatusForbidden},
		{"other origin", "application/json", map[string]string{"Origin": "http://evil.example"}, good, http.StatusForbidden},
		{"form post", "application/x-www-form-urlencoded", nil, "password=right&mode=idle", http.StatusUnsupportedMediaType},
		{"unknown field", "application/json", nil, `{"password":"right","mode":"idle","for":"5m","force":true}`, http.StatusBadRequest},
		{"wrong password", "application/json", nil, `{"password":"wrong","mode":"idle","for":"5m"}`, http.StatusUnauthorized},
		{"too long", "application/json", nil, `{"password":"right","mode":"idle","for":"48h"}`, http.StatusBadRequest},
		{"right", "application/json", nil, good, http.StatusOK},
		// Three attempts are used: the next is refused whatever it says.
		{"rate-limited", "application/json", nil, good, http.StatusTooManyRequests},
	} {
		if code, body := post(t, base+"/api/mode", c.ctype, c.hdr, c.body); code != c.want {
			t.Errorf("%s: got %d %s, want %d", c.name, code, body, c.want)
		}
	}
	if got := src.changes(); len(got) != 1 || got[0] != "idle 5m0s" {
		t.Errorf("the agent was asked for %v, want only the one with the right password", got)
	}
}

// TestReadOnlyWithoutPassword expects every change refused when no
// password hash is configured, and the page to say it cannot change.
func TestReadOnlyWithoutPassword(t *testing.T) {
	t.Parallel()
	src := &source{}
	base := startPage(t, src, nil, 0)
	if code, _ := post(t, base+"/api/mode", "application/json", nil, `{"password":"","clear":true}`); code != http.StatusForbidden {
		t.Errorf("change on a read-only page: got %d, want 403", code)
	}
	resp, err := http.Get(base + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		CanChange *bool  `json:"can_change"`
		Verdict   string `json:"verdict"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.CanChange == nil || *st.CanChange || st.Verdict != "OK" {
		t.Errorf("status: %+v (%v), want the report with can_change false", st, err)
	}
	if len(src.changes()) != 0 {
		t.Errorf("the agent was asked for %v", src.changes())
	}
}

// TestPageAssets serves the embedded page with a policy that admits no
// other origin's scripts, and nothing else from the file system.
func TestPageAssets(t *testing.T) {
	t.Parallel()
	base := startPage(t, &source{}, nil, 0)
	for path, want := range map[string]int{"/": 200, "/app.js": 200, "/app.css": 200, "/index.html": 404, "/assets/app.js": 404, "/../server.go": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want && !(want == 404 && resp.StatusCode == 301) {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
		if want == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: CSP %q", path, resp.Header.Get("Content-Security-Policy"))
		}
		if path == "/" && (!bytes.Contains(b, []byte(`src="app.js"`)) || bytes.Contains(b, []byte("http://")) || bytes.Contains(b, []byte("https://"))) {
			t.Errorf("the page loads something from elsewhere:\n%s", b)
		}
	}
}
