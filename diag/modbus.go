package diag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hearth-energy/hearth/drivers"
)

// Raw Modbus access through the agent's own bus owners: `hearth modbus
// read|scan` without --direct. Requests queue on the link's owner
// goroutine with the polls, so the port is never opened twice and the
// devices on it never see two masters.

// ModbusTarget picks a link: by a configured device's name, or by a
// configured device's address (and transport, when given).
type ModbusTarget struct {
	Device    string `json:"device,omitempty"`
	Address   string `json:"address,omitempty"`
	Transport string `json:"transport,omitempty"`
}

// ModbusReadRequest is the body of POST /v1/modbus/read.
type ModbusReadRequest struct {
	ModbusTarget
	Unit  *int   `json:"unit,omitempty"` // default: the named device's unit
	Table string `json:"table,omitempty"`
	Start int    `json:"start"`
	Count int    `json:"count"`
}

// ModbusRegister is one register read.
type ModbusRegister struct {
	Address uint16 `json:"address"`
	Value   uint16 `json:"value"`
	Hex     string `json:"hex"`
}

// ModbusReadResult answers POST /v1/modbus/read.
type ModbusReadResult struct {
	Unit      int              `json:"unit"`
	Table     string           `json:"table"`
	Start     int              `json:"start"`
	Registers []ModbusRegister `json:"registers"`
	Link      LinkReport       `json:"link"` // the link's counters after the read
}

// ModbusScanRequest is the body of POST /v1/modbus/scan.
type ModbusScanRequest struct {
	ModbusTarget
	Units   []int  `json:"units"`
	Timeout string `json:"timeout,omitempty"` // per absent unit; default 300ms
}

// ModbusScanResult answers POST /v1/modbus/scan.
type ModbusScanResult struct {
	Units []drivers.ScanResult `json:"units"`
	Link  LinkReport           `json:"link"`
}

// LinkReport is one physical link and what its owner has done.
type LinkReport struct {
	Transport string                      `json:"transport"`
	Address   string                      `json:"address"`
	Devices   []string                    `json:"devices"`
	Stats     drivers.BusStats            `json:"stats"`
	Units     map[uint8]drivers.UnitStats `json:"units"`
}

// Bounds on what the API asks of a link that devices are polled on.
const (
	defaultScanTimeout = 300 * time.Millisecond
	maxScanTimeout     = 5 * time.Second
)

var errNoLink = errors.New("no configured device on that link")

// link finds the link t names, and the unit of the device named.
func (s *Server) link(t ModbusTarget) (Link, int, error) {
	links := s.opt.Agent.Links()
	switch {
	case t.Device != "":
		for _, l := range links {
			for _, d := range l.Devices {
				if d.Name == t.Device {
					return l, d.Unit, nil
				}
			}
		}
		return Link{}, 0, fmt.Errorf("%w: no device named %q", errNoLink, t.Device)
	case t.Address != "":
		for _, l := range links {
			if l.Address == t.Address && (t.Transport == "" || t.Transport == l.Transport) && len(l.Devices) > 0 {
				return l, l.Devices[0].Unit, nil
			}
		}
		return Link{}, 0, fmt.Errorf("%w: no device on %s %s (the agent reaches only configured links; use --direct for others)", errNoLink, t.Transport, t.Address)
	}
	if len(links) == 1 && len(links[0].Devices) > 0 {
		return links[0], links[0].Devices[0].Unit, nil
	}
	return Link{}, 0, errors.New("name a device or an address: the agent has several links")
}

func linkReport(l Link) LinkReport {
	r := LinkReport{Transport: l.Transport, Address: l.Address, Stats: l.Bus.Stats(), Units: l.Bus.Units()}
	for _, d := range l.Devices {
		r.Devices = append(r.Devices, d.Name)
	}
	return r
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request: %w", err)
	}
	return nil
}

func linkError(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, errNoLink) {
		code = http.StatusNotFound
	}
	writeAPIError(w, code, err)
}

func (s *Server) modbusHandlers(mux *http.ServeMux) {
	mux.HandleFunc("GET "+APIVersion+"/modbus/links", func(w http.ResponseWriter, r *http.Request) {
		out := []LinkReport{}
		for _, l := range s.opt.Agent.Links() {
			out = append(out, linkReport(l))
		}
		writeAPI(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST "+APIVersion+"/modbus/read", func(w http.ResponseWriter, r *http.Request) {
		var req ModbusReadRequest
		if err := decodeBody(w, r, &req); err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		l, unit, err := s.link(req.ModbusTarget)
		if err != nil {
			linkError(w, err)
			return
		}
		if req.Unit != nil {
			unit = *req.Unit
		}
		if req.Table == "" {
			req.Table = string(drivers.Holding)
		}
		switch {
		case unit < 0 || unit > 247:
			err = fmt.Errorf("unit %d: want 0..247", unit)
		case req.Table != string(drivers.Holding) && req.Table != string(drivers.Input):
			err = fmt.Errorf("table %q: want holding or input", req.Table)
		case req.Count < 1 || req.Count > drivers.MaxReadRegisters:
			err = fmt.Errorf("count %d: want 1..%d", req.Count, drivers.MaxReadRegisters)
		case req.Start < 0 || req.Start+req.Count > 0x10000:
			err = fmt.Errorf("start %d, count %d: runs outside registers 0..65535", req.Start, req.Count)
		}
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 4*time.Second)
		defer cancel()
		regs, err := l.Bus.ReadOnce(ctx, uint8(unit), drivers.Table(req.Table), uint16(req.Start), uint16(req.Count), 0)
		if err != nil {
			writeAPIError(w, http.StatusBadGateway, err)
			return
		}
		res := ModbusReadResult{Unit: unit, Table: req.Table, Start: req.Start, Registers: make([]ModbusRegister, len(regs))}
		for i, v := range regs {
			res.Registers[i] = ModbusRegister{Address: uint16(req.Start + i), Value: v, Hex: fmt.Sprintf("0x%04x", v)}
		}
		res.Link = linkReport(l)
		writeAPI(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST "+APIVersion+"/modbus/scan", func(w http.ResponseWriter, r *http.Request) {
		var req ModbusScanRequest
		if err := decodeBody(w, r, &req); err != nil {
			writeAPIError(w, http.StatusBadRequest, err)
			return
		}
		l, _, err := s.link(req.ModbusTarget)
		if err != nil {
			linkError(w, err)
			return
		}
		timeout := defaultScanTimeout
		if req.Timeout != "" {
			if timeout, err = time.ParseDuration(req.Timeout); err != nil || timeout <= 0 || timeout > maxScanTimeout {
				writeAPIError(w, http.StatusBadRequest, fmt.Errorf("timeout %q: want a duration above 0 and at most %s", req.Timeout, maxScanTimeout))
				return
			}
		}
		if len(req.Units) == 0 {
			writeAPIError(w, http.StatusBadRequest, errors.New("units: name at least one unit"))
			return
		}
		for _, u := range req.Units {
			if u < 0 || u > 247 {
				writeAPIError(w, http.StatusBadRequest, fmt.Errorf("unit %d: want 0..247", u))
				return
			}
		}
		s.log.Info("modbus scan through the agent", "link", l.Address, "units", len(req.Units), "timeout", timeout)
		res := ModbusScanResult{Units: []drivers.ScanResult{}}
		for _, u := range req.Units {
			// Each absent unit holds the link for one timeout; the polls
			// of the devices on it queue in between.
			if sr, ok := drivers.ScanUnit(r.Context(), l.Bus, uint8(u), timeout); ok {
				res.Units = append(res.Units, sr)
			}
			if r.Context().Err() != nil {
				return // the caller went away
			}
		}
		res.Link = linkReport(l)
		writeAPI(w, http.StatusOK, res)
	})
}
