// Package diag is the agent's local diagnostics: the JSON API on a Unix
// socket that the field CLI talks to (its records are the stable output of
// the CLI's --json), the client the CLI uses, and the read-only Prometheus
// metrics. It needs no network: a tech at the battery reaches everything
// the agent knows through the socket.
//
// diag imports the root package and drivers (raw Modbus reads and scans go
// through the agent's own bus owners). What it serves comes from an Agent,
// an interface defined here and implemented by package agent.
package diag

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
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
)

// APIVersion prefixes every path of the diagnostics API.
const APIVersion = "/v1"

// Agent is what the API serves.
type Agent interface {
	// Status gathers what `hearth status` shows.
	Status() StatusReport
	// Points returns the latest value of every point, of one device or of
	// all (device ""); an error for a device that is not configured.
	Points(device string) ([]PointReport, error)
	// Events returns the recent events at or after since, of type typ
	// (any when empty), oldest first.
	Events(since time.Time, typ string) []EventReport
	Buffer() BufferReport
	// SetMode starts a local lease for field work (powerW: the test power
	// of mode power); ErrNoControl when the agent controls no device.
	// ClearMode ends it.
	SetMode(mode hearth.Mode, powerW *hearth.Watts, d time.Duration) (hearth.Ack, error)
	ClearMode() error
	// Keys reports the setpoint keys in force; ReloadKeys reads them again
	// from the config file (as SIGHUP does).
	Keys() KeysReport
	ReloadKeys() (KeysReport, error)
	// ResetVersion forgets the highest setpoint version accepted (the way
	// out of a version lockout) and returns it.
	ResetVersion() (uint64, error)
	// ResetFloor sets the floor under true time back to the build time
	// (the way out of a floor far ahead) and says from what to what.
	ResetFloor() (ResetFloorResult, error)
	// Links returns the physical links the agent owns.
	Links() []Link
	// Config is the config the agent runs with, defaults applied, keyed
	// as in the file, secrets redacted.
	Config() (map[string]any, error)
	// ReconnectUplink makes the uplink attempt to connect now, cutting
	// short the boot delay or backoff; it reports whether it was waiting
	// (false: connected, or attempting already).
	ReconnectUplink() bool
	// ProbeDevice makes the link ask a device marked down at once,
	// instead of at its next probe, and reports the device after the
	// next poll; an error for a device that is not configured.
	ProbeDevice(name string) (ProbeResult, error)
}

// Link is one physical link the agent owns, with the devices on it.
type Link struct {
	Transport string
	Address   string
	Bus       *drivers.Bus
	Devices   []LinkDevice
}

// LinkDevice is one configured device on a link.
type LinkDevice struct {
	Name string
	Unit int
}

// ErrNoControl is returned when the agent controls no device.
var ErrNoControl = errors.New("this agent controls no device: there is no mode to set")

// ServerOptions configures a Server.
type ServerOptions struct {
	Socket string // path of the Unix socket
	Group  string // group the socket is given, mode 0660; "" keeps the agent's
	Agent  Agent
	// LogLevel is the level of the agent's logger, which the API reads
	// and changes; nil: a level of its own.
	LogLevel *slog.LevelVar
	Logger   *slog.Logger
	// Logs keeps the agent's recent log lines for GET /v1/logs; nil
	// serves none.
	Logs *LogRing
}

// Server serves the diagnostics API.
type Server struct {
	opt  ServerOptions
	log  *slog.Logger
	srv  *http.Server
	done chan struct{}
	ino  uint64 // the socket file this server made: Close removes only it
}

// Start listens on the socket and serves on a goroutine of its own until
// Close. A socket left by a killed agent (nothing accepts on it) is
// replaced; one that a process still accepts on is left alone, and Start
// fails naming that process.
func Start(opt ServerOptions) (*Server, error) {
	if opt.LogLevel == nil {
		opt.LogLevel = new(slog.LevelVar)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	path := opt.Socket
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("diag socket folder: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// Only a stale socket is removed: one that a process still
		// accepts on belongs to another agent.
		if pid, live := SocketPeer(path); live {
			return nil, fmt.Errorf("diag socket %s is served by another process (pid %d): left alone", path, pid)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("diag socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // Close removes it, if it is still ours
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("diag socket mode: %w", err)
	}
	if g := opt.Group; g != "" {
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
	s := &Server{opt: opt, log: opt.Logger, done: make(chan struct{}), ino: inode(path)}
	s.srv = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("diag api", "err", err)
		}
	}()
	return s, nil
}

// Close stops serving, waits briefly for requests in flight, and removes
// the socket.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s.srv.Shutdown(ctx)
	<-s.done
	if inode(s.opt.Socket) == s.ino {
		os.Remove(s.opt.Socket)
	}
}

func (s *Server) handler() http.Handler {
	a := s.opt.Agent
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+APIVersion+"/status", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET "+APIVersion+"/points", func(w http.ResponseWriter, r *http.Request) {
		pts, err := a.Points(r.URL.Query().Get("device"))
		if err != nil {
			writeAPIError(w, http.StatusNotFound, err)
			return
		}
		writeAPI(w, http.StatusOK, pts)
	})
	mux.HandleFunc("GET "+APIVersion+"/events", func(w http.ResponseWriter, r *http.Request) {
		since := time.Time{}
		if q := r.URL.Query().Get("since"); q != "" {
			d, err := time.ParseDuration(q)
			if err != nil {
				writeAPIError(w, http.StatusBadRequest, fmt.Errorf("since: %w", err))
				return
			}
			since = time.Now().Add(-d)
		}
		typ := r.URL.Query().Get("type")
		if typ != "" {
			if err := CheckEventType(typ); err != nil {
				writeAPIError(w, http.StatusBadRequest, err)
				return
			}
		}
		writeAPI(w, http.StatusOK, a.Events(since, typ))
	})
	mux.HandleFunc("GET "+APIVersion+"/buffer", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, a.Buffer())
	})
	mux.HandleFunc("GET "+APIVersion+"/lease", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, a.Status().Lease)
	})
	mux.HandleFunc("PUT "+APIVersion+"/log-level", func(w http.ResponseWriter, r *http.Request) {
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
		s.opt.LogLevel.Set(lv)
		s.log.Info("log level changed", "level", lv)
		writeAPI(w, http.StatusOK, map[string]string{"level": lv.String()})
	})
	mux.HandleFunc("GET "+APIVersion+"/keys", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, a.Keys())
	})
	mux.HandleFunc("POST "+APIVersion+"/keys/reload", func(w http.ResponseWriter, r *http.Request) {
		rep, err := a.ReloadKeys()
		if err != nil {
			writeAPIError(w, http.StatusUnprocessableEntity, err)
			return
		}
		writeAPI(w, http.StatusOK, rep)
	})
	confirmedPost(mux, a, "/lease/reset-version", "reset its setpoint version", func() (any, error) {
		old, err := a.ResetVersion()
		if err != nil {
			return nil, err
		}
		s.log.Warn("setpoint version reset through the diagnostics socket", "from", old)
		return ResetVersionResult{FromVersion: old}, nil
	})
	confirmedPost(mux, a, "/clock/reset-floor", "reset its clock floor", func() (any, error) {
		res, err := a.ResetFloor()
		if err != nil {
			return nil, err
		}
		s.log.Warn("clock floor reset through the diagnostics socket", "from", res.From, "to", res.To)
		return res, nil
	})
	mux.HandleFunc("GET "+APIVersion+"/logs", func(w http.ResponseWriter, r *http.Request) {
		res := LogsReport{Lines: []string{}}
		if s.opt.Logs != nil {
			res.Lines = s.opt.Logs.Lines()
		}
		writeAPI(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET "+APIVersion+"/config", func(w http.ResponseWriter, r *http.Request) {
		cfg, err := a.Config()
		if err != nil {
			writeAPIError(w, http.StatusInternalServerError, err)
			return
		}
		writeAPI(w, http.StatusOK, cfg)
	})
	mux.HandleFunc("POST "+APIVersion+"/uplink/reconnect", func(w http.ResponseWriter, r *http.Request) {
		res := ReconnectResult{Result: "attempting"}
		switch {
		case a.ReconnectUplink():
			s.log.Info("uplink reconnect requested through the diagnostics API")
		case a.Status().Uplink.Connected:
			res.Result = "connected"
		}
		writeAPI(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST "+APIVersion+"/devices/{name}/probe", func(w http.ResponseWriter, r *http.Request) {
		res, err := a.ProbeDevice(r.PathValue("name"))
		if err != nil {
			writeAPIError(w, http.StatusNotFound, err)
			return
		}
		s.log.Info("device probe requested through the diagnostics API", "device", res.Device.Name, "was_down", res.WasDown, "up", res.Device.Up)
		writeAPI(w, http.StatusOK, res)
	})
	s.modeHandlers(mux)
	s.modbusHandlers(mux)
	return mux
}

func writeAPI(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ReconnectResult answers POST /v1/uplink/reconnect: "attempting" (an
// attempt starts now, or is under way) or "connected" (nothing to do).
type ReconnectResult struct {
	Result string `json:"result"`
}

// APIError is the body of every non-2xx answer of the diagnostics API.
type APIError struct {
	Error string `json:"error"`
}

func writeAPIError(w http.ResponseWriter, code int, err error) {
	writeAPI(w, code, APIError{Error: err.Error()})
}

// confirmedPost serves POST path: a deliberate act (what) done by do
// only when the body (a ConfirmRequest) confirms this gateway's id, and
// answered 400 otherwise; do's result is the answer, its error a 409.
func confirmedPost(mux *http.ServeMux, a Agent, path, what string, do func() (any, error)) {
	mux.HandleFunc("POST "+APIVersion+path, func(w http.ResponseWriter, r *http.Request) {
		var req ConfirmRequest
		if err := decodeBody(w, r, &req); err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		if id := a.Status().Agent.GatewayID; req.Confirm != id {
			writeAPIError(w, http.StatusBadRequest, fmt.Errorf("confirm %q: give this gateway's id (%s) to %s", req.Confirm, id, what))
			return
		}
		res, err := do()
		if err != nil {
			writeAPIError(w, http.StatusConflict, err)
			return
		}
		writeAPI(w, http.StatusOK, res)
	})
}
