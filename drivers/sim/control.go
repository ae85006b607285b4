package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ParseFault parses a fault spec: comma-separated items from
//
//	latency=DURATION  delay each request (e.g. 200ms)
//	noresponse        read requests and never answer
//	exception=CODE    answer with that exception code (1..255)
//	corrupt           answer with a damaged frame (bad CRC on RTU, wrong transaction id on TCP)
//	drop              close the connection without answering (on a serial line: no answer)
//	requests=N        apply to the next N requests only, then clear
//
// "" and "none" are the zero Fault, which clears any fault.
func ParseFault(spec string) (Fault, error) {
	var f Fault
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "none" {
		return f, nil
	}
	for item := range strings.SplitSeq(spec, ",") {
		k, v, hasV := strings.Cut(strings.TrimSpace(item), "=")
		needsValue := k == "latency" || k == "exception" || k == "requests"
		if needsValue != hasV {
			return Fault{}, fmt.Errorf("fault %q: %s takes %s value", spec, k, map[bool]string{true: "a", false: "no"}[needsValue])
		}
		var err error
		switch k {
		case "latency":
			f.Latency, err = time.ParseDuration(v)
			if err == nil && f.Latency < 0 {
				err = fmt.Errorf("negative")
			}
		case "noresponse":
			f.NoResponse = true
		case "exception":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 8)
			if err == nil && n == 0 {
				err = fmt.Errorf("code must be 1..255")
			}
			f.Exception = byte(n)
		case "corrupt":
			f.Corrupt = true
		case "drop":
			f.Drop = true
		case "requests":
			f.Requests, err = strconv.Atoi(v)
			if err == nil && f.Requests < 0 {
				err = fmt.Errorf("negative")
			}
		default:
			return Fault{}, fmt.Errorf("fault %q: unknown item %q (want latency=D, noresponse, exception=N, corrupt, drop, requests=N)", spec, k)
		}
		if err != nil {
			return Fault{}, fmt.Errorf("fault %q: %s: %v", spec, k, err)
		}
	}
	return f, nil
}

// ServeControl runs the control line protocol on r and w until r ends: one
// command a line, one answer line each ("ok", a JSON object, or
// "error: …"). Commands apply to every simulator in sims, or with a
// "unit N " prefix to the one answering unit N:
//
//	fault SPEC              inject a fault (see ParseFault); "fault none" clears it
//	soc PCT                 set the state of charge
//	pv W | load W           pin PV production or house load ("nan" releases)
//	temp C                  pin the enclosure temperature ("nan" releases)
//	control local|remote    put the battery under local control, where it runs its own
//	                        self-consumption whatever model 124 says, or back under remote
//	                        control (SetLocalControl)
//	cellv MIN MAX           pin the cell voltages ("cellv nan" releases)
//	celltemp MIN MAX        pin the module temperatures of model 803 ("celltemp nan" releases)
//	raw MODEL POINT VALUE   serve VALUE in place of a point's registers (SetRaw), e.g.
//	                        "raw 802 SoC 2500", "raw 802 CellV_SF 0x8000"; "raw clear" ends every one
//	sf MODEL POINT SF       change a scale factor the device uses (SetScaleFactor), e.g.
//	                        "sf 124 InOutWRte_SF -3"
//	refuse MODEL POINT      answer reads and writes touching a point's registers with
//	                        exception 2 (illegal data address), e.g. "refuse 103 TmpOt";
//	                        "refuse clear" serves them all again
//	state                   print the simulation state as JSON
//	writes                  print the number of writes received, as JSON
//	writes N                print the latest N writes, oldest first, as JSON
func ServeControl(r io.Reader, w io.Writer, sims ...*Simulator) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fmt.Fprintln(w, control(line, sims))
	}
	return sc.Err()
}

func control(line string, sims []*Simulator) string {
	targets := sims
	fields := strings.Fields(line)
	if fields[0] == "unit" {
		if len(fields) < 3 {
			return "error: unit N COMMAND"
		}
		n, err := strconv.ParseUint(fields[1], 10, 8)
		if err != nil {
			return "error: unit: " + err.Error()
		}
		targets = nil
		for _, s := range sims {
			if s.cfg.UnitID == uint8(n) {
				targets = append(targets, s)
			}
		}
		if targets == nil {
			return fmt.Sprintf("error: no simulator answers unit %d", n)
		}
		fields = fields[2:]
	}
	cmd, args := fields[0], fields[1:]
	arg := strings.Join(args, " ")
	num := func() (float64, error) { return strconv.ParseFloat(arg, 64) }
	each := func(f func(*Simulator) error) string {
		for _, s := range targets {
			if err := f(s); err != nil {
				return fmt.Sprintf("error: %s: %v", cmd, err)
			}
		}
		return "ok"
	}
	switch cmd {
	case "fault":
		f, err := ParseFault(arg)
		if err != nil {
			return "error: " + err.Error()
		}
		for _, s := range targets {
			s.SetFault(f)
		}
	case "soc", "pv", "load", "temp":
		v, err := num()
		if err != nil {
			return fmt.Sprintf("error: %s: %v", cmd, err)
		}
		for _, s := range targets {
			switch cmd {
			case "soc":
				s.SetSoC(v)
			case "pv":
				s.SetPV(v)
			case "load":
				s.SetLoad(v)
			case "temp":
				s.SetTemp(v)
			}
		}
	case "cellv", "celltemp":
		lo, hi, err := pair(args)
		if err != nil {
			return fmt.Sprintf("error: %s: %v (want MIN MAX, or nan)", cmd, err)
		}
		return each(func(s *Simulator) error {
			if cmd == "cellv" {
				s.SetCellV(lo, hi)
			} else {
				s.SetCellTemp(lo, hi)
			}
			return nil
		})
	case "control":
		if arg != "local" && arg != "remote" {
			return "error: control: want local or remote, got " + strconv.Quote(arg)
		}
		return each(func(s *Simulator) error { s.SetLocalControl(arg == "local"); return nil })
	case "raw":
		if len(args) == 1 && args[0] == "clear" {
			return each(func(s *Simulator) error { s.ClearRaw(); return nil })
		}
		model, v, err := modelPointValue(args)
		if err != nil {
			return "error: raw: " + err.Error() + ` (want "raw MODEL POINT VALUE" or "raw clear")`
		}
		return each(func(s *Simulator) error { return s.SetRaw(model, args[1], v) })
	case "refuse":
		if len(args) == 1 && args[0] == "clear" {
			return each(func(s *Simulator) error { s.ClearRefused(); return nil })
		}
		if len(args) != 2 {
			return "error: usage: refuse MODEL POINT | refuse clear"
		}
		model, err := strconv.ParseUint(args[0], 10, 16)
		if err != nil {
			return "error: refuse: model: " + err.Error()
		}
		return each(func(s *Simulator) error { return s.Refuse(uint16(model), args[1]) })
	case "sf":
		model, v, err := modelPointValue(args)
		if err != nil {
			return "error: sf: " + err.Error() + ` (want "sf MODEL POINT SF")`
		}
		return each(func(s *Simulator) error { return s.SetScaleFactor(model, args[1], int16(max(min(v, 32767), -32768))) })
	case "state", "writes":
		out := map[string]any{}
		n := -1
		if cmd == "writes" && len(args) == 1 {
			var err error
			if n, err = strconv.Atoi(args[0]); err != nil || n < 0 {
				return "error: writes: want a count, got " + args[0]
			}
		}
		for _, s := range targets {
			switch {
			case cmd == "state":
				out[strconv.Itoa(int(s.cfg.UnitID))] = s.State()
			case n >= 0:
				ws := s.Writes()
				out[strconv.Itoa(int(s.cfg.UnitID))] = ws[max(0, len(ws)-n):]
			default:
				out[strconv.Itoa(int(s.cfg.UnitID))] = len(s.Writes())
			}
		}
		b, err := json.Marshal(out)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b)
	default:
		return fmt.Sprintf("error: unknown command %q (fault, soc, pv, load, temp, control, cellv, celltemp, raw, refuse, sf, state, writes)", cmd)
	}
	return "ok"
}

// pair parses "MIN MAX" or "nan" (both NaN).
func pair(args []string) (lo, hi float64, err error) {
	if len(args) == 1 && strings.EqualFold(args[0], "nan") {
		return math.NaN(), math.NaN(), nil
	}
	if len(args) != 2 {
		return 0, 0, fmt.Errorf("%d values", len(args))
	}
	if lo, err = strconv.ParseFloat(args[0], 64); err == nil {
		hi, err = strconv.ParseFloat(args[1], 64)
	}
	return lo, hi, err
}

// modelPointValue parses "MODEL POINT VALUE"; VALUE is an integer,
// decimal or 0x-hex, and may be negative.
func modelPointValue(args []string) (uint16, int64, error) {
	if len(args) != 3 {
		return 0, 0, fmt.Errorf("%d arguments", len(args))
	}
	model, err := strconv.ParseUint(args[0], 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("model %q: %v", args[0], err)
	}
	v, err := strconv.ParseInt(args[2], 0, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("value %q: %v", args[2], err)
	}
	return uint16(model), v, nil
}

// ServeControlListener runs the control protocol (see ServeControl) on
// every connection accepted on ln, typically a Unix socket, until ctx is
// cancelled. It owns ln.
func ServeControlListener(ctx context.Context, ln net.Listener, sims ...*Simulator) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control: %w", err)
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		if ctx.Err() != nil {
			c.Close() // accepted as the listener closed
		}
		wg.Go(func() {
			ServeControl(c, c, sims...)
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
}
