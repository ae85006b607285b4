// Package web serves the agent's local page: what `hearth status`,
// `hearth points` and `hearth events` show, and plots of the last day,
// for an installer with a phone on the gateway's network. The page and
// its script are embedded (it works with no internet), and it reads the
// agent through the same records as the diagnostics API.
//
// Without credentials it is read-only. Changing the local mode takes the
// password whose hash is in the config, goes through the agent's
// safety-checked local lease like `hearth mode set`, is refused from other
// origins, and is rate-limited.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
)

//go:embed assets
var assets embed.FS

// Source is what the page shows and changes; package agent implements it.
type Source interface {
	Status() diag.StatusReport
	Points(device string) ([]diag.PointReport, error)
	Events(since time.Time, typ string) []diag.EventReport
	History(since time.Time) HistoryReport
	SetMode(mode hearth.Mode, powerW *hearth.Watts, d time.Duration) (hearth.Ack, error)
	ClearMode() error
}

// Options configures a Server.
type Options struct {
	Addr   string // host:port to listen on
	Source Source
	// Verify checks the local password; nil: the page is read-only and
	// refuses every change.
	Verify func(password string) bool
	// Extra handlers served beside the page, by pattern (such as
	// "GET /metrics" when metrics share the page's address).
	Extra  map[string]http.Handler
	Logger *slog.Logger
	// Attempts and Refill bound password attempts: Attempts at once, one
	// more every Refill. Zero: 5 and 12 s.
	Attempts int
	Refill   time.Duration
}

// Server serves the page until Close.
type Server struct {
	srv     *http.Server
	done    chan struct{}
	addr    net.Addr
	log     *slog.Logger
	opt     Options
	limiter *limiter
}

// maxEvents bounds the events one page load carries.
const maxEvents = 100

// Start listens on opt.Addr and serves on a goroutine of its own.
func Start(opt Options) (*Server, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Attempts <= 0 {
		opt.Attempts = 5
	}
	if opt.Refill <= 0 {
		opt.Refill = 12 * time.Second
	}
	ln, err := net.Listen("tcp", opt.Addr)
	if err != nil {
		return nil, fmt.Errorf("http_listen: %w", err)
	}
	s := &Server{done: make(chan struct{}), addr: ln.Addr(), log: opt.Logger, opt: opt,
		limiter: &limiter{max: opt.Attempts, tokens: float64(opt.Attempts), every: opt.Refill, last: time.Now()}}
	s.srv = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("web page", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the page is served on.
func (s *Server) Addr() net.Addr { return s.addr }

// Close stops serving and waits briefly for requests in flight.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s.srv.Shutdown(ctx)
	<-s.done
}

func (s *Server) handler() http.Handler {
	src := s.opt.Source
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/app.js" && r.URL.Path != "/app.css" {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		st := src.Status()
		writeJSON(w, http.StatusOK, pageStatus{StatusReport: st, CanChange: s.opt.Verify != nil})
	})
	mux.HandleFunc("GET /api/points", func(w http.ResponseWriter, r *http.Request) {
		pts, err := src.Points("")
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, pts)
	})
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		evs := src.Events(time.Now().Add(-HistoryWindow), "")
		if len(evs) > maxEvents {
			evs = evs[len(evs)-maxEvents:]
		}
		writeJSON(w, http.StatusOK, evs)
	})
	mux.HandleFunc("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.History(time.Now().Add(-HistoryWindow)))
	})
	mux.HandleFunc("POST /api/mode", s.setMode)
	for pattern, h := range s.opt.Extra {
		mux.Handle(pattern, h)
	}
	// A change from a page of another origin (a cross-site form or
	// script) is refused before the password is even looked at.
	cop := http.NewCrossOriginProtection()
	return securityHeaders(cop.Handler(mux))
}

// pageStatus is the status with what the page may offer.
type pageStatus struct {
	diag.StatusReport
	// CanChange says a password is configured: the page offers the mode
	// form.
	CanChange bool `json:"can_change"`
}

// ModeChange is the body of POST /api/mode: a local lease (as `hearth
// mode set`), or Clear to end it, with the local password.
type ModeChange struct {
	Password string `json:"password"`
	diag.ModeRequest
	Clear bool `json:"clear,omitempty"`
}

func (s *Server) setMode(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, errors.New("send application/json"))
		return
	}
	if s.opt.Verify == nil {
		writeError(w, http.StatusForbidden, errors.New("this page is read-only: no http_password_hash is configured"))
		return
	}
	var req ModeChange
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request: %w", err))
		return
	}
	if wait, ok := s.limiter.take(time.Now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		writeError(w, http.StatusTooManyRequests, fmt.Errorf("too many attempts: try again in %s", wait.Round(time.Second)))
		return
	}
	if !s.opt.Verify(req.Password) {
		s.log.Warn("local page: mode change with a wrong password refused", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, errors.New("wrong password"))
		return
	}
	if req.Clear {
		if err := s.opt.Source.ClearMode(); err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		s.log.Info("local mode cleared from the local page", "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, map[string]string{"result": "cleared"})
		return
	}
	d, err := req.Check()
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	ack, err := s.opt.Source.SetMode(req.Mode, req.PowerW, d)
	if errors.Is(err, diag.ErrNoControl) || errors.Is(err, diag.ErrLocalPowerUnsupported) {
		writeError(w, http.StatusConflict, err)
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.log.Info("local mode set from the local page", "mode", req.Mode, "for", d, "result", ack.Result, "reason", ack.Reason, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, ack)
}

// securityHeaders keeps the page from being framed or fed foreign
// scripts: everything it needs comes from itself.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// limiter is a token bucket over password attempts, for the whole page:
// guessing from many addresses is no faster than from one.
type limiter struct {
	mu     sync.Mutex
	max    int
	tokens float64
	every  time.Duration
	last   time.Time
}

// take uses one attempt, or says how long until one is free.
func (l *limiter) take(now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el := now.Sub(l.last); el > 0 {
		l.tokens = min(float64(l.max), l.tokens+el.Seconds()/l.every.Seconds())
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return 0, true
	}
	return time.Duration((1 - l.tokens) * float64(l.every)), false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, diag.APIError{Error: err.Error()})
}
