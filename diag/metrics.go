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

// StartMetrics listens on addr (host:port) and serves /metrics, from what
// status returns, on a goroutine of its own until Close.
func StartMetrics(addr string, status func() StatusReport, log *slog.Logger) (*Metrics, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", MetricsHandler(status))
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

// MetricsHandler serves the metrics from what status returns.
func MetricsHandler(status func() StatusReport) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		WriteMetrics(w, status())
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

// WriteMetrics writes st in the Prometheus text format.
func WriteMetrics(w io.Writer, st StatusReport) {
	m := &metricWriter{w: w, seen: map[string]bool{}}
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
	m.write("hearth_uplink_connect_attempts_total", "counter", "MQTT connection attempts.", nil, float64(st.Uplink.Attempts))
	m.write("hearth_uplink_published_total", "counter", "Messages acknowledged by the broker.", nil, float64(st.Uplink.Published))
	b := st.Buffer
	m.write("hearth_buffer_pending_readings", "gauge", "Readings waiting for delivery.", nil, float64(b.PendingReadings))
	m.write("hearth_buffer_pending_events", "gauge", "Events waiting for delivery.", nil, float64(b.PendingEvents))
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
	if st.Safety.AppliedW != nil {
		m.write("hearth_applied_watts", "gauge", "Battery power last commanded (positive discharges).", nil, float64(*st.Safety.AppliedW))
	}
}
