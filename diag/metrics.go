package diag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Metrics serves read-only Prometheus metrics. It is the agent's only TCP
// listener, and it has no write path.
type Metrics struct {
	srv  *http.Server
	done chan struct{}
}

// MetricsSource is what the metrics are made of: the status, and the
// latest points (nil: no point gauges).
type MetricsSource struct {
	Status func() StatusReport
	Points func() []PointReport
}

// StartMetrics listens on addr (host:port) and serves /metrics, made of
// src, on a goroutine of its own until Close.
func StartMetrics(addr string, src MetricsSource, log *slog.Logger) (*Metrics, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", src.Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, metricsIndex)
	})
	m := &Metrics{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && log != nil {
			log.Error("metrics", "err", err)
		}
	}()
	return m, nil
}

// metricsIndex answers / on the metrics listener, for a person who
// opens the address in a browser.
const metricsIndex = `<!doctype html><html><head><meta charset="utf-8"><title>hearth metrics</title></head>
<body><h1>hearth</h1><p>Prometheus metrics: <a href="/metrics">/metrics</a></p></body></html>
`

// Handler serves the metrics.
func (src MetricsSource) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		m := &metricWriter{w: w, seen: map[string]bool{}}
		m.status(src.Status())
		if src.Points != nil {
			m.points(src.Points())
		}
	})
}

// Close stops serving and waits briefly for requests in flight.
func (m *Metrics) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	m.srv.Shutdown(ctx)
	<-m.done
}

// metricWriter writes the Prometheus text format, one HELP/TYPE header per
// metric family.
type metricWriter struct {
	w    io.Writer
	seen map[string]bool
}

func (m *metricWriter) write(name, typ, help string, labels map[string]string, v float64) {
	if !m.seen[name] {
		m.seen[name] = true
		fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	fmt.Fprintf(m.w, "%s%s %g\n", name, formatLabels(labels), v)
}

func formatLabels(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	for i, k := range keys {
		parts[i] = fmt.Sprintf(`%s="%s"`, k, r.Replace(l[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// pointMetrics names the gauges of the main points, in base units
// (Prometheus' conventions: ratios 0–1, watts, volts, degrees Celsius).
var pointMetrics = []struct {
	point, name, help string
	scale             float64
}{
	{"soc_pct", "hearth_device_state_of_charge_ratio", "Battery state of charge, 0 to 1.", 0.01},
	{"soh_pct", "hearth_device_state_of_health_ratio", "Battery state of health, 0 to 1.", 0.01},
	{"power_w", "hearth_device_battery_power_watts", "Battery power, positive discharging.", 1},
	{"dc_power_w", "hearth_device_dc_power_watts", "Inverter DC input (PV) power.", 1},
	{"ac_power_w", "hearth_device_ac_power_watts", "Inverter AC power, positive exporting.", 1},
	{"grid_power_w", "hearth_device_grid_power_watts", "Grid power at the meter, positive exporting.", 1},
	{"battery_v", "hearth_device_battery_voltage_volts", "Battery voltage.", 1},
	{"cell_v_min", "hearth_device_cell_voltage_min_volts", "Lowest cell voltage.", 1},
	{"cell_v_max", "hearth_device_cell_voltage_max_volts", "Highest cell voltage.", 1},
	{"temp_c", "hearth_device_temperature_celsius", "Battery temperature.", 1},
	{"ac_hz", "hearth_device_ac_frequency_hertz", "Grid frequency at the inverter.", 1},
}

// points writes the main points' gauges, only where the latest reading
// has a value that is not stale: a missing value is no sample, never 0.
// The age of each device's latest reading goes beside them.
func (m *metricWriter) points(pts []PointReport) {
	age := map[string]float64{}
	var devices []string
	for _, p := range pts {
		if _, ok := age[p.Device]; !ok {
			devices = append(devices, p.Device)
		}
		age[p.Device] = max(age[p.Device], p.AgeS)
	}
	for _, pm := range pointMetrics {
		for _, p := range pts {
			if p.Name == pm.point && p.Value != nil && !p.Stale {
				m.write(pm.name, "gauge", pm.help, map[string]string{"device": p.Device}, *p.Value*pm.scale)
			}
		}
	}
	for _, d := range devices {
		m.write("hearth_device_reading_age_seconds", "gauge", "Age of the device's latest reading.", map[string]string{"device": d}, age[d])
	}
}

func (m *metricWriter) status(st StatusReport) {
	now := st.Time
	m.write("hearth_up", "gauge", "1 while the agent runs.", nil, 1)
	m.write("hearth_healthy", "gauge", "1 when hearth status says OK.", nil, b2f(st.Verdict == "OK"))
	for _, d := range st.Devices {
		l := map[string]string{"device": d.Name}
		m.write("hearth_device_up", "gauge", "1 when the device answered its last poll.", l, b2f(d.Up))
		m.write("hearth_device_polls_total", "counter", "Polls of the device.", l, float64(d.Polls))
		m.write("hearth_device_errors_total", "counter", "Failed polls of the device.", l, float64(d.Failures))
		m.write("hearth_device_poll_seconds", "gauge", "Duration of the last poll.", l, d.PollMS/1000)
	}
	m.write("hearth_uplink_connected", "gauge", "1 while the MQTT session is up.", nil, b2f(st.Uplink.Connected))
	if st.Uplink.Broker != "" {
		m.write("hearth_uplink_broker_info", "gauge", "The broker (cluster node) the session is with, or tries next; 1 while connected to it.", map[string]string{"broker": st.Uplink.Broker}, b2f(st.Uplink.Connected))
	}
	m.write("hearth_uplink_connects_total", "counter", "MQTT sessions established.", nil, float64(st.Uplink.Connects))
	m.write("hearth_uplink_connect_attempts_total", "counter", "MQTT connection attempts.", nil, float64(st.Uplink.Attempts))
	m.write("hearth_uplink_published_total", "counter", "Messages acknowledged by the broker.", nil, float64(st.Uplink.Published))
	b := st.Buffer
	m.write("hearth_buffer_pending_readings", "gauge", "Readings waiting for delivery.", nil, float64(b.PendingReadings))
	m.write("hearth_buffer_pending_events", "gauge", "Events waiting for delivery.", nil, float64(b.PendingEvents))
	m.write("hearth_buffer_pending_aggregates", "gauge", "Per-minute aggregates of compacted readings waiting for delivery.", nil, float64(b.PendingAggregates))
	m.write("hearth_buffer_compactions_total", "counter", "Compactions of readings into aggregates under the quota.", nil, float64(b.Compactions))
	m.write("hearth_buffer_readings_dropped_total", "counter", "Readings given up under the quota (reported as gaps).", nil, float64(b.ReadingsDropped))
	m.write("hearth_buffer_readings_refused_total", "counter", "Readings not buffered because the disk was full.", nil, float64(b.ReadingsRefused))
	oldest := 0.0
	if b.OldestPending != nil {
		oldest = now.Sub(*b.OldestPending).Seconds()
	}
	m.write("hearth_buffer_oldest_pending_seconds", "gauge", "Age of the oldest undelivered reading.", nil, oldest)
	m.write("hearth_buffer_bytes", "gauge", "Size of the buffer database on disk.", nil, float64(b.FileBytes))
	m.write("hearth_buffer_max_bytes", "gauge", "The buffer's quota.", nil, float64(b.MaxBytes))
	m.write("hearth_lease_active", "gauge", "1 while a setpoint lease is active.", nil, b2f(st.Lease != nil))
	if st.Lease != nil {
		m.write("hearth_lease_remaining_seconds", "gauge", "Time left on the active lease.", nil, st.Lease.RemainingS)
	}
	m.write("hearth_safety_ok", "gauge", "1 when no safety rule holds the battery.", nil, b2f(st.Safety.State == "ok"))
	m.write("hearth_safety_trips", "gauge", "Safety rules currently tripped.", nil, float64(len(st.Safety.Trips)))
	for _, rule := range st.Safety.Trips {
		m.write("hearth_safety_rule_tripped", "gauge", "1 for each safety rule tripped, by rule.", map[string]string{"rule": rule}, 1)
	}
	devs := make([]string, 0, len(st.Safety.Devices))
	for d := range st.Safety.Devices {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	for _, d := range devs {
		ds := st.Safety.Devices[d]
		m.write("hearth_device_safety_ok", "gauge", "1 when no safety rule holds the device.", map[string]string{"device": d}, b2f(ds.Safety == "ok"))
		for _, rule := range ds.Trips {
			m.write("hearth_device_safety_rule_tripped", "gauge", "1 for each safety rule tripped on the device, by rule.", map[string]string{"device": d, "rule": rule}, 1)
		}
	}
	if st.Safety.AppliedW != nil {
		m.write("hearth_applied_watts", "gauge", "Battery power last commanded (positive discharges).", nil, float64(*st.Safety.AppliedW))
	}
}
