package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
)

// DiagAPIVersion prefixes every path of the diagnostics API.
const DiagAPIVersion = "/v1"

// maxRecentEvents bounds the in-memory event history the API serves.
const maxRecentEvents = 1000

// eventLog keeps the most recent events for `hearth events`, newest last.
type eventLog struct {
	mu     sync.Mutex
	events []EventReport
}

func (l *eventLog) add(e EventReport) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	if over := len(l.events) - maxRecentEvents; over > 0 {
		l.events = append(l.events[:0:0], l.events[over:]...)
	}
}

func (l *eventLog) since(t time.Time, typ string) []EventReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []EventReport{}
	for _, e := range l.events {
		if !e.Time.Before(t) && (typ == "" || e.Type == typ) {
			out = append(out, e)
		}
	}
	return out
}

// recordEvent stores an event for the cloud (the buffer's outbox) and for
// the local history. Storing can fail (disk full); the local history and
// the log still have it.
func (a *Agent) recordEvent(typ string, data map[string]any) {
	now := a.clock.Now().UTC()
	a.events.add(EventReport{Time: now, Type: typ, Data: data})
	raw, err := json.Marshal(data)
	if err == nil {
		_, err = a.store.AppendEvent(buffer.Event{Time: now, Type: typ, Data: raw})
	}
	if err != nil {
		a.log.Error("store event", "type", typ, "err", err)
	}
	a.signal()
}

// Status gathers what `hearth status` shows.
func (a *Agent) Status() StatusReport {
	now := time.Now().UTC()
	r := StatusReport{
		Time: now,
		Agent: AgentReport{
			Version: hearth.Version, GatewayID: a.cfg.GatewayID, Boot: a.boot,
			Started: a.start.UTC(), UptimeS: now.Sub(a.start).Seconds(), Clock: a.clockState(),
			LogLevel: a.logLevel.Level().String(),
		},
		Safety: SafetyReport{State: "ok", Trips: []string{}, Mode: "monitor"},
	}
	for _, d := range a.devices {
		r.Devices = append(r.Devices, d.report())
	}
	if a.stateSource != nil {
		st := a.stateSource()
		r.Safety = SafetyReport{State: st.Safety, Trips: st.Trips, Mode: string(st.Mode), AppliedW: st.AppliedW}
		if r.Safety.Trips == nil {
			r.Safety.Trips = []string{}
		}
		if st.Lease != nil {
			r.Lease = &LeaseReport{LeaseInfo: *st.Lease, RemainingS: st.Lease.ValidUntil.Sub(now).Seconds()}
		}
	}
	us := a.up.Stats()
	r.Uplink = UplinkReport{
		Broker: a.cfg.Uplink.Broker, Connected: us.Connected, Attempts: us.Attempts,
		Connects: us.Connects, Published: us.Published, LastError: us.LastError,
	}
	if us.Connected {
		t := us.ConnectedSince.UTC()
		r.Uplink.ConnectedSince = &t
	} else {
		a.mu.Lock()
		t := a.uplinkDownSince
		a.mu.Unlock()
		r.Uplink.DownSince = &t
	}
	r.Buffer = a.bufferReport()
	verdict(&r, now)
	return r
}

func (a *Agent) bufferReport() BufferReport {
	st, err := a.store.Stats()
	if err != nil {
		return BufferReport{Error: err.Error()}
	}
	b := BufferReport{
		PendingReadings: st.PendingReadings, PendingAggregates: st.PendingAggregates, PendingEvents: st.PendingEvents,
		FileBytes: st.FileBytes, MaxBytes: st.MaxBytes, LastSeq: st.LastSeq,
		Compactions: st.Compactions, ReadingsCompacted: st.ReadingsCompacted, AggregatesDropped: st.AggregatesDropped,
		ReadingsDropped: st.ReadingsDropped, EventsDropped: st.EventsDropped, DiskFull: st.DiskFull,
		ReadingsRefused: st.ReadingsRefused, WriteBytes: st.WriteBytes, CommitsPerHour: st.CommitsPerHour,
	}
	if !st.OldestPending.IsZero() {
		t := st.OldestPending.UTC()
		b.OldestPending = &t
	}
	return b
}

func (d *device) report() DeviceReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := DeviceReport{
		Name: d.cfg.Name, Transport: d.cfg.Transport, Address: d.cfg.Address, UnitID: d.cfg.UnitID,
		Up: d.polls > 0 && d.lastErr == nil, Polls: d.polls, Failures: d.failures,
		PollMS: float64(d.pollTime.Microseconds()) / 1000,
	}
	if d.polls > 0 {
		t := d.last.Time
		r.LastPoll = &t
	}
	if !d.lastOK.IsZero() {
		t := d.lastOK.UTC()
		r.LastOK = &t
	}
	if d.lastErr != nil {
		r.LastError = d.lastErr.Error()
		t := d.downSince.UTC()
		r.DownSinceTS = &t
	}
	if id := d.drv.Identity(); id.Serial != "" || id.Manufacturer != "" {
		r.Identity = &Identity{Manufacturer: id.Manufacturer, Model: id.Model, Serial: id.Serial, Firmware: id.Firmware}
	}
	return r
}

// Points returns the latest value of every point, of one device or all.
func (a *Agent) Points(device string) ([]PointReport, error) {
	now := time.Now()
	out := []PointReport{}
	found := device == ""
	for _, d := range a.devices {
		if device != "" && d.cfg.Name != device {
			continue
		}
		found = true
		d.mu.Lock()
		last := d.last
		d.mu.Unlock()
		for _, name := range last.PointNames() {
			p := last.Points[name]
			age := now.Sub(last.Time)
			pr := PointReport{Device: d.cfg.Name, Name: name, Quality: p.Quality, Unit: UnitOf(name),
				Time: last.Time, AgeS: age.Seconds(), Stale: age > a.cfg.Safety.MaxReadingAge.D()}
			if p.Good() {
				v := p.Value
				pr.Value = &v
			}
			out = append(out, pr)
		}
	}
	if !found {
		return nil, fmt.Errorf("no device named %q", device)
	}
	return out, nil
}

// serveDiag listens on the diagnostics socket and serves the API until ctx
// ends. The socket is mode 0660, owned by diag_group when configured.
func (a *Agent) serveDiag(ctx context.Context) (func(), error) {
	path := a.cfg.DiagSocket
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("diag socket folder: %w", err)
	}
	// A socket left by a killed agent would make Listen fail.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("diag socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("diag socket mode: %w", err)
	}
	if g := a.cfg.DiagGroup; g != "" {
		grp, err := user.LookupGroup(g)
		if err == nil {
			gid, _ := strconv.Atoi(grp.Gid)
			err = os.Chown(path, -1, gid)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("diag socket group %q: %w", g, err)
		}
	}
	srv := &http.Server{Handler: a.diagHandler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("diag api", "err", err)
		}
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
		os.Remove(path)
	}
	return stop, nil
}

func (a *Agent) diagHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiagAPIVersion+"/status", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET "+DiagAPIVersion+"/points", func(w http.ResponseWriter, r *http.Request) {
		pts, err := a.Points(r.URL.Query().Get("device"))
		if err != nil {
			writeAPIError(w, http.StatusNotFound, err)
			return
		}
		writeAPI(w, http.StatusOK, pts)
	})
	mux.HandleFunc("GET "+DiagAPIVersion+"/events", func(w http.ResponseWriter, r *http.Request) {
		since := time.Time{}
		if s := r.URL.Query().Get("since"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				writeAPIError(w, http.StatusBadRequest, fmt.Errorf("since: %w", err))
				return
			}
			since = time.Now().Add(-d)
		}
		writeAPI(w, http.StatusOK, a.events.since(since, r.URL.Query().Get("type")))
	})
	mux.HandleFunc("GET "+DiagAPIVersion+"/buffer", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, a.bufferReport())
	})
	mux.HandleFunc("GET "+DiagAPIVersion+"/lease", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, a.Status().Lease)
	})
	mux.HandleFunc("PUT "+DiagAPIVersion+"/log-level", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Level string `json:"level"`
		}
		var lv slog.Level
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		if err := lv.UnmarshalText([]byte(body.Level)); err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		a.logLevel.Set(lv)
		a.log.Info("log level changed", "level", lv)
		writeAPI(w, http.StatusOK, map[string]string{"level": lv.String()})
	})
	a.modeHandlers(mux)
	a.modbusHandlers(mux)
	return mux
}

func writeAPI(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// APIError is the body of every non-2xx answer of the diagnostics API.
type APIError struct {
	Error string `json:"error"`
}

func writeAPIError(w http.ResponseWriter, code int, err error) {
	writeAPI(w, code, APIError{Error: err.Error()})
}
