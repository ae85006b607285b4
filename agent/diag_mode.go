package agent

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
}

// maxLocalLease bounds a local override, so a forgotten one ends by itself.
const maxLocalLease = 12 * time.Hour

// errNoControl is returned when the agent controls no device.
var errNoControl = errors.New("this agent controls no device: there is no mode to set")

func (a *Agent) modeHandlers(mux *http.ServeMux) {
	mux.HandleFunc("POST "+DiagAPIVersion+"/mode", func(w http.ResponseWriter, r *http.Request) {
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
		if a.override == nil {
			writeAPIError(w, http.StatusConflict, errNoControl)
			return
		}
		ack, err := a.override(req.Mode, d)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		a.log.Info("local mode set", "mode", req.Mode, "for", d, "result", ack.Result, "reason", ack.Reason)
		writeAPI(w, http.StatusOK, ack)
	})
	mux.HandleFunc("DELETE "+DiagAPIVersion+"/mode", func(w http.ResponseWriter, r *http.Request) {
		if a.clearOverride == nil {
			writeAPIError(w, http.StatusConflict, errNoControl)
			return
		}
		a.clearOverride()
		a.log.Info("local mode cleared")
		writeAPI(w, http.StatusOK, map[string]string{"result": "cleared"})
	})
}
