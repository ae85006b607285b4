package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/web"
)

// TestPagePlotsSeededForTenDevices: the buffer holds a day of readings of
// ten batteries, one a minute each (an outage that lasted the day). An
// agent started with the local page seeds its plots with all of it: every
// minute of the day, the newest included, with the ten batteries' power
// summed.
func TestPagePlotsSeededForTenDevices(t *testing.T) {
	const devices = 10
	const minutes = int(web.HistoryWindow/time.Minute) - 1
	dir := t.TempDir()
	yaml := func(page string) *config.Config {
		var b strings.Builder
		fmt.Fprintf(&b, "gateway_id: gw-page\ndata_dir: %s\ndiag_socket: %s/s.sock\nassume_clock_synced: true\n%sdevices:\n", dir, dir, page)
		for i := range devices {
			fmt.Fprintf(&b, "  - {name: battery%d, address: \"127.0.0.1:%d\"}\n", i, i+1)
		}
		b.WriteString("uplink:\n  broker: tcp://127.0.0.1:1\n")
		cfg, err := config.Parse("test.yaml", []byte(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	a, err := New(yaml(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	newest := time.Now().Truncate(time.Minute)
	var rs []hearth.Reading
	for m := minutes - 1; m >= 0; m-- {
		at := newest.Add(-time.Duration(m) * time.Minute)
		for i := range devices {
			rs = append(rs, hearth.Reading{Device: fmt.Sprintf("battery%d", i), Time: at, Clock: hearth.ClockSynced,
				Points: map[string]hearth.Point{"soc_pct": hearth.V(50), "power_w": hearth.V(100)}})
		}
	}
	if _, err := a.store.Append(rs); err != nil {
		a.closeAll()
		t.Fatal(err)
	}
	a.closeAll()

	a, err = New(yaml(fmt.Sprintf("http_listen: 127.0.0.1:%d\n", 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.closeAll()
	rep := a.History(newest.Add(-web.HistoryWindow))
	n := len(rep.Minute)
	if n != minutes || rep.Minute[n-1] != newest.UnixMilli() {
		last := "none"
		if n > 0 {
			last = time.UnixMilli(rep.Minute[n-1]).UTC().String()
		}
		t.Fatalf("plots of %d devices: %d minutes, the newest %s; want %d, the newest %s", devices, n, last, minutes, newest.UTC())
	}
	for i, w := range rep.Series["battery_w"] {
		if w == nil || *w != devices*100 {
			t.Errorf("minute %s: battery power %v, want %d W (every battery's)", time.UnixMilli(rep.Minute[i]).UTC(), show(w), devices*100)
			break
		}
	}
}

func show(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
