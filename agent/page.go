package agent

import (
	"net/http"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/telemetry"
	"github.com/hearth-energy/hearth/web"
)

// historyMinutes is how many rows per device the buffer hands the plots
// at start: one per minute of their window, and the minute being filled.
const historyMinutes = int(web.HistoryWindow/time.Minute) + 1

var _ web.Source = (*Agent)(nil)

// newPageData makes what the local page and `hearth points` keep beyond
// the latest reading and, when the page is served (http_listen), seeds
// its plots from what the buffer holds of the last day (readings not yet
// delivered, and their aggregates).
func (a *Agent) newPageData() {
	a.lastGood = telemetry.NewLastGood()
	if a.cfg.HTTPListen == "" {
		return // no page, no plots: nothing read at start, nothing kept per reading
	}
	a.hist = web.NewHistory(a.cfg.Safety.MeterDevice, a.cfg.Safety.MeterPoint, a.clocks.Since)
	// A day of every device: however many there are, the newest minutes
	// are not cut off (were the buffer to hold more, it hands the newest).
	rs, as, err := a.store.History(a.clocks.Wall().Add(-web.HistoryWindow), historyMinutes*max(len(a.cfg.Devices), 1))
	if err != nil {
		a.log.Warn("plots start empty", "err", err)
		return
	}
	// Stored readings of an unsynced clock may carry any time (a stale
	// RTC after a power cut): only those of a synced clock are placed.
	for _, ag := range as {
		if ag.Clock == hearth.ClockSynced {
			a.hist.AddAggregate(ag)
		}
	}
	for _, r := range rs {
		if r.Clock == hearth.ClockSynced {
			a.hist.Add(r)
		}
	}
}

// observe sees every reading first: the control loop, then what the page
// and `hearth points` keep.
func (a *Agent) observe(r hearth.Reading) {
	a.ctl.Observe(r)
	a.lastGood.Observe(r)
	if a.hist != nil {
		a.hist.Add(r)
	}
}

// History returns the plots' data from since on (none without the page).
func (a *Agent) History(since time.Time) web.HistoryReport {
	if a.hist == nil {
		return web.HistoryReport{}
	}
	return a.hist.Report(since, a.clocks.Wall())
}

// startPage serves the local page when http_listen is set, with the
// metrics beside it when metrics_listen names the same address. Like
// the diagnostics, a page that cannot be served is logged and the agent
// runs on.
func (a *Agent) startPage() *web.Server {
	if a.cfg.HTTPListen == "" {
		return nil
	}
	opt := web.Options{Addr: a.cfg.HTTPListen, Source: a, Logger: a.log.With("component", "web")}
	if h := a.cfg.HTTPPasswordHash; h != "" {
		ph, err := config.ParsePasswordHash(h)
		if err != nil { // validated with the config; kept read-only if not
			a.log.Error("local page read-only", "err", err)
		} else {
			opt.Verify = ph.Verify
		}
	}
	if a.cfg.MetricsListen == a.cfg.HTTPListen {
		opt.Extra = map[string]http.Handler{"GET /metrics": a.metricsSource().Handler()}
	}
	s, err := web.Start(opt)
	if err != nil {
		a.log.Error("local page unavailable", "err", err)
		return nil
	}
	a.log.Info("local page served", "addr", s.Addr().String())
	return s
}

// metricsSource is what /metrics is made of.
func (a *Agent) metricsSource() diag.MetricsSource {
	return diag.MetricsSource{Status: a.Status, Points: func() []diag.PointReport {
		pts, _ := a.Points("")
		return pts
	}}
}
