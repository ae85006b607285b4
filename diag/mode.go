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
	For  string      `json:"for"` // a duration such as 30m
	// PowerW is the power to hold in mode power (positive discharges): a
	// small test power for commissioning (sign, wiring, CT direction),
	// through safety like any setpoint; the agent bounds its magnitude.
	PowerW *hearth.Watts `json:"power_w,omitempty"`
}

// Bounds of a local override, so a forgotten one ends by itself: a test
// power is for a check of minutes.
const (
	maxLocalLease = 12 * time.Hour
	maxLocalPower = 15 * time.Minute
)

// ErrLocalPowerUnsupported is returned by an agent whose control loop
// cannot hold a local test power.
var ErrLocalPowerUnsupported = errors.New("this agent cannot hold a local test power (mode power): only idle and auto can be set locally")

// Check checks the request's form and returns how long the local lease
// is to last; the agent checks the rest, through safety.
func (req ModeRequest) Check() (time.Duration, error) {
	limit := maxLocalLease
	if req.Mode == hearth.ModePower {
		limit = maxLocalPower
	}
	d, err := time.ParseDuration(req.For)
	if err != nil || d <= 0 || d > limit {
		return 0, fmt.Errorf("for %q: want a duration above 0 and at most %s for mode %s", req.For, limit, req.Mode)
	}
	if (req.Mode == hearth.ModePower) != (req.PowerW != nil) {
		return 0, errors.New("power_w goes with mode power, and only with it")
	}
	return d, nil
}

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
		d, err := req.Check()
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		ack, err := a.SetMode(req.Mode, req.PowerW, d)
		if errors.Is(err, ErrNoControl) || errors.Is(err, ErrLocalPowerUnsupported) {
			writeAPIError(w, http.StatusConflict, err)
			return
		}
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		var power any // the value, not its address
		if req.PowerW != nil {
			power = float64(*req.PowerW)
		}
		s.log.Info("local mode set", "mode", req.Mode, "power_w", power, "for", d, "result", ack.Result, "reason", ack.Reason)
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
