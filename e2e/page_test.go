package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// pagePassword is the local page's password in the tests.
const pagePassword = "field-tech-7431"

// chromiumPath finds Debian's Chromium, which scripts/deps.sh installs.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: scripts/deps.sh installs it (apt-get install chromium)")
	return ""
}

// seedDay stores a day of readings of a battery and a grid meter, one a
// minute up to a minute before end, as a gateway that was offline all day
// keeps them: PV on a clear day, a house load with morning and evening
// peaks, a 10 kWh battery that charges from PV surplus and covers the
// load otherwise, and the grid taking the rest. It returns the battery's
// SoC at the end.
func seedDay(t *testing.T, db string, end time.Time) float64 {
	t.Helper()
	s, err := buffer.Open(db, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const capacityWh = 10_000
	soc := 35.0
	var rs []hearth.Reading
	start := end.Add(-24 * time.Hour).Truncate(time.Minute)
	for i := 0; ; i++ {
		ts := start.Add(time.Duration(i) * time.Minute)
		if !ts.Before(end.Add(-time.Minute)) {
			break
		}
		h := float64(ts.Local().Hour()) + float64(ts.Local().Minute())/60
		pv := math.Max(0, 5200*math.Sin(math.Pi*(h-6)/13))
		load := 350 + 1400*math.Exp(-math.Pow((h-7.5)/0.7, 2)) + 2100*math.Exp(-math.Pow((h-19)/1.3, 2))
		batt := 0.0 // positive discharging
		switch {
		case pv > load && soc < 80:
			batt = -math.Min(pv-load, 3000)
		case pv < load && soc > 10:
			batt = math.Min(load-pv, 2500)
		}
		soc -= batt / 60 / capacityWh * 100
		grid := pv + batt - load // positive exporting
		mono := int64(i) * 60_000
		rs = append(rs,
			hearth.Reading{Device: "battery", Time: ts, Clock: hearth.ClockSynced, Boot: "seed", MonoMS: mono, Points: map[string]hearth.Point{
				"soc_pct": hearth.V(math.Round(soc*10) / 10), "power_w": hearth.V(math.Round(batt)), "dc_power_w": hearth.V(math.Round(pv)),
			}},
			hearth.Reading{Device: "meter", Time: ts, Clock: hearth.ClockSynced, Boot: "seed", MonoMS: mono, Points: map[string]hearth.Point{
				"grid_power_w": hearth.V(math.Round(grid)),
			}})
	}
	if _, err := s.Append(rs); err != nil {
		t.Fatal(err)
	}
	return soc
}

// TestLocalPageInChromium opens the agent's local page in headless
// Chromium, as an installer's phone would: it shows the simulator's values
// and follows them, the plots draw the day the buffer holds, and a mode
// change is refused without the password and applied, through safety,
// with it. The page's screenshot goes to $HEARTH_SCREENSHOT when set
// (`make screenshot` writes the README's).
func TestLocalPageInChromium(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	m := startBroker(t)
	dir := t.TempDir()
	soc := seedDay(t, filepath.Join(dir, "hearth.db"), time.Now())
	bat, batAddr := startSim(t, sim.Config{UnitID: 1, Serial: "PAGE-BAT-0001", InitialSoC: soc})
	bat.SetPV(1800)
	bat.SetLoad(700)
	meter, meterAddr := startSim(t, sim.Config{UnitID: 1, Serial: "PAGE-MTR-0001", Meter: true, PVPeakW: 1})
	meter.SetPV(0)
	hash, err := config.HashPassword(pagePassword)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	sock := filepath.Join(dir, "hearth.sock")
	cfg := filepath.Join(dir, "hearth.yaml")
	if err := os.WriteFile(cfg, []byte(`gateway_id: gw-page
data_dir: `+dir+`
diag_socket: `+sock+`
http_listen: `+addr+`
metrics_listen: `+addr+`
http_password_hash: "`+hash+`"
devices:
  - {name: battery, address: "`+batAddr+`", poll_interval: 500ms, timeout: 500ms}
  - {name: meter, address: "`+meterAddr+`", poll_interval: 500ms, timeout: 500ms}
safety:
  meter_device: meter
uplink:
  broker: `+m.URL()+`
  boot_delay: 0s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	startAgent(t, cfg)
	waitListening(t, addr)
	base := "http://" + addr + "/"

	// The metrics share the page's address.
	if body := httpGet(t, base+"metrics"); !strings.Contains(body, "hearth_up 1") {
		t.Errorf("/metrics on the page's address:\n%s", body)
	}

	ctx, cancel := chromeContext(t, chromium)
	defer cancel()
	// text reads an element's text ("" while there is none).
	text := func(sel string) string {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`((document.querySelector(`+strconv.Quote(sel)+`) || {}).textContent || "").trim()`))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return got
	}
	waitText := func(what, sel string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		var last string
		for time.Now().Before(deadline) {
			if last = text(sel); ok(last) {
				return last
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("%s: %s shows %q", what, sel, last)
		return ""
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatalf("open the page: %v", err)
	}

	// The simulator's values, with units, and their changes.
	pv := `tr[data-point="battery/dc_power_w"] td.v`
	waitText("PV power", pv, func(s string) bool { return s == "1,800 W" })
	bat.SetPV(2600)
	waitText("PV power after a change", pv, func(s string) bool { return s == "2,600 W" })
	socText := waitText("SoC", `tr[data-point="battery/soc_pct"] td.v`, func(s string) bool { return strings.HasSuffix(s, " %") })
	got, err := strconv.ParseFloat(strings.TrimSuffix(socText, " %"), 64)
	if want := bat.State().SoCPct; err != nil || math.Abs(got-want) > 1 {
		t.Errorf("SoC on the page %q, the simulator's %.1f %%", socText, want)
	}
	waitText("device identity", `[data-device="battery"] .head`, func(s string) bool { return strings.Contains(s, "PAGE-BAT-0001") })
	waitText("verdict", "#verdict .word", func(s string) bool { return s == "OK" })

	// The plots: the day from the buffer, and the live minutes.
	var lens map[string]int
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		lens, err = chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`Object.fromEntries([...document.querySelectorAll(".plot path[data-series]")].map(p => [p.dataset.series, (p.getAttribute("d").match(/[ML]/g) || []).length]))`))
		if err == nil && lens["soc_pct"] > 1000 && lens["battery_w"] > 1000 && lens["pv_w"] > 1000 && lens["grid_w"] > 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plots: points per series %v (%v), want a day of minutes in each of soc_pct, battery_w, pv_w and grid_w", lens, err)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// A mode change: refused without the password and with a wrong one,
	// applied with the right one.
	setMode := func(password string) string {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Evaluate[chromedp.Void](`(() => { const f = document.getElementById("mode-form");
				f.mode.value = "idle"; f.for.value = ""; f.password.value = "";
				document.getElementById("mode-result").textContent = ""; })()`),
			chromedp.SendKeys(chromedp.CSS(`#mode-form input[name="for"]`), "10m"),
		)
		if err == nil && password != "" {
			err = chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(`#mode-form input[name="password"]`), password))
		}
		if err == nil {
			err = chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#mode-set")))
		}
		if err != nil {
			t.Fatalf("mode form: %v", err)
		}
		return waitText("mode result", "#mode-result", func(s string) bool { return s != "" && s != "…" })
	}
	lease := func() *diag.LeaseReport {
		out, stderr, code := hearthCLI(t, nil, "lease", "--json", "--socket", sock)
		if code != 0 {
			t.Fatalf("hearth lease: exit %d: %s", code, stderr)
		}
		var l *diag.LeaseReport
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("hearth lease --json: %v\n%s", err, out)
		}
		return l
	}
	if res := setMode(""); !strings.HasPrefix(res, "Refused: wrong password") {
		t.Errorf("without the password the page says %q, want a refusal", res)
	}
	if res := setMode("field-tech-7432"); !strings.HasPrefix(res, "Refused: wrong password") {
		t.Errorf("with a wrong password the page says %q, want a refusal", res)
	}
	if l := lease(); l != nil {
		t.Fatalf("a refused change left a lease: %+v", l)
	}
	if res := setMode(pagePassword); !strings.HasPrefix(res, "applied") {
		t.Errorf("with the password the page says %q, want applied", res)
	}
	if l := lease(); l == nil || l.Source != "local" {
		t.Fatalf("after the change the lease is %+v, want a local one", l)
	}
	waitText("lease countdown", "#lease-left", func(s string) bool { return strings.HasSuffix(s, "left") && strings.Contains(s, "min") })
	waitText("safety mode", "#safety", func(s string) bool { return strings.Contains(s, "idle") })
	if s := text("#uplink"); !strings.Contains(s, "connected") {
		t.Errorf("uplink card: %q", s)
	}

	if out := os.Getenv("HEARTH_SCREENSHOT"); out != "" {
		// Let the form's message fade from view: the screenshot shows the
		// page as a tech finds it, with the local lease running.
		if err := chromedp.Do(ctx,
			chromedp.Evaluate[chromedp.Void](`document.getElementById("mode-result").textContent = "", window.scrollTo(0, 0), undefined`)); err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(out, cropPNG(t, shot, 2*1500), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// chromeContext starts headless Chromium with a profile of its own, no
// background networking, and a phone-sized window.
func chromeContext(t *testing.T, chromium string) (context.Context, context.CancelFunc) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Flag("disable-background-networking", true),
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(412, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(412, 900, chromedp.EmulateScale(2))); err != nil {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, func() { cancelTimeout(); cancelCtx(); cancelAlloc() }
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// cropPNG keeps the top height pixels of a PNG: the part of the page a
// phone shows in its first screens.
func cropPNG(t *testing.T, b []byte, height int) []byte {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	r := img.Bounds()
	r.Max.Y = min(r.Max.Y, r.Min.Y+height)
	var out bytes.Buffer
	if err := png.Encode(&out, img.(interface {
		SubImage(image.Rectangle) image.Image
	}).SubImage(r)); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
