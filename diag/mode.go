package diag

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hearth-energy/hearth"
)

// ModeRequest is the body of POST /v1/mode: a local lease for field work.
type ModeRequest struct {
	Mode hearth.Mode `json:"mode"`
	// PowerW is the test power of mode power (positive discharges), for
	// commissioning: checking sign, wiring and CT direction.
	PowerW *hearth.Watts `json:"power_w,omitempty"`
	For    string        `json:"for"` // a duration such as 30m
}

// maxLocalLease bounds a local override, so a forgotten one ends by itself.
const maxLocalLease = 12 * time.Hour

func (s *Server) modeHandlers(mux *http.ServeMux) {
	a := s.opt.Agent
	mux.HandleFunc("POST "+APIVersion+"/mode", func(w http.ResponseWriter, r *http.Request) {
		var req ModeRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeAPIError(w, http.StatusBadRequest, fmt.Errorf("bad request: %w", err))
			return
		}
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 || d > maxLocalLease {
			writeAPIError(w, http.StatusBadRequest, fmt.Errorf("for %q: want a duration above 0 and at most %s", req.For, maxLocalLease))
			return
		}
		ack, err := a.SetMode(req.Mode, req.PowerW, d)
		if errors.Is(err, ErrNoControl) {
			writeAPIError(w, http.StatusConflict, err)
			return
		}
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		s.log.Info("local mode set", "mode", req.Mode, "for", d, "result", ack.Result, "reason", ack.Reason)
		writeAPI(w, http.StatusOK, ack)
	})
	mux.HandleFunc("DELETE "+APIVersion+"/mode", func(w http.ResponseWriter, r *http.Request) {
		if err := a.ClearMode(); err != nil {
			writeAPIError(w, http.StatusConflict, err)
			return
		}
		s.log.Info("local mode cleared")
		writeAPI(w, http.StatusOK, map[string]string{"result": "cleared"})
	})
}
