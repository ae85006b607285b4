package sim

import (
	"math"
	"time"
)

const (
	// maxStep is the integration step; long clock jumps use at most
	// maxSteps steps so a jump of days stays cheap.
	maxStep  = time.Second
	maxSteps = 20000
	// tempTau is the enclosure's thermal time constant.
	tempTau = 15 * time.Minute
	// Enclosure heating per kW of battery power and of PV power.
	tempPerBatteryKW = 3.0
	tempPerPVKW      = 1.0
	nominalHz        = 50.0
	nominalV         = 230.0
)

// advance integrates the physics from s.last to now, reverting a model 124
// command exactly at its deadline, then samples the instantaneous values at
// now. A clock that steps backwards restarts integration from the new time.
// Callers hold s.mu.
func (s *Simulator) advance(now time.Time) {
	if now.Before(s.last) {
		s.last = now
	}
	dt := max(maxStep, now.Sub(s.last)/maxSteps)
	for s.last.Before(now) {
		s.checkRevert(s.last)
		next := s.last.Add(dt)
		if next.After(now) {
			next = now
		}
		if at, ok := s.revertAt(); ok && at.After(s.last) && at.Before(next) {
			next = at
		}
		s.integrate(s.last, next)
		s.last = next
	}
	s.checkRevert(now)
	s.instant(now)
}

// integrate moves energy, lifetime counters and temperature over [t0, t1],
// with PV, load and the battery's power taken at the midpoint.
func (s *Simulator) integrate(t0, t1 time.Time) {
	h := t1.Sub(t0).Seconds()
	if h <= 0 {
		return
	}
	mid := t0.Add(t1.Sub(t0) / 2)
	pv, load := s.pvAt(mid), s.loadAt(mid)
	p := s.target(pv, load)
	eff := s.cfg.Efficiency
	switch {
	case p > 0:
		// Discharging draws more from the cells than reaches the AC side.
		need := p * h / 3600 / eff
		if need >= s.energyWh {
			p = s.energyWh * eff * 3600 / h
			s.energyWh = 0
		} else {
			s.energyWh -= need
		}
		s.dischWh += p * h / 3600
	case p < 0:
		add := -p * h / 3600 * eff
		if room := s.cfg.CapacityWh - s.energyWh; add >= room {
			p = -room / eff * 3600 / h
			s.energyWh = s.cfg.CapacityWh
		} else {
			s.energyWh += add
		}
	}
	if ac := pv + p; ac > 0 {
		s.exportWh += ac * h / 3600
	}
	if grid := pv + p - load; grid > 0 {
		s.gridExpWh += grid * h / 3600
	} else {
		s.gridImpWh -= grid * h / 3600
	}
	if math.IsNaN(s.pinTemp) {
		target := s.cfg.AmbientC + tempPerBatteryKW*math.Abs(p)/1000 + tempPerPVKW*pv/1000
		s.temp += (target - s.temp) * (1 - math.Exp(-h/tempTau.Seconds()))
	}
}

// instant samples PV, load, battery power and the grid at now.
func (s *Simulator) instant(now time.Time) {
	s.pv, s.load = s.pvAt(now), s.loadAt(now)
	s.batt = s.target(s.pv, s.load)
	s.hz = nominalHz + clamp(s.rng.NormFloat64()*0.01, -0.05, 0.05)
	for i := range s.vph {
		s.vph[i] = nominalV + clamp(s.rng.NormFloat64()*0.5, -2, 2)
	}
}

// command returns the mode selected by StorCtl_Mod and the power it asks
// for, positive discharging, before any limit.
func (s *Simulator) command() (Mode, float64) {
	outRef, inRef := s.rateRefs()
	out := s.get(124, "OutWRte") / 100 * outRef
	in := s.get(124, "InWRte") / 100 * inRef
	switch int(s.get(124, "StorCtl_Mod")) & (storCtlCharge | storCtlDischarge) {
	case storCtlCharge:
		return ModeCharge, -in
	case storCtlDischarge:
		return ModeDischarge, out
	case storCtlCharge | storCtlDischarge:
		return ModeNet, out - in
	}
	return ModeSelfConsumption, 0
}

// rateRefs returns the watts 100 % OutWRte and InWRte stand for: WChaMax
// both ways, or with Config.DischargeReference the maximum discharge rate
// (model 802 WDisChaRteMax) for OutWRte.
func (s *Simulator) rateRefs() (out, in float64) {
	in = s.get(124, "WChaMax")
	if s.cfg.DischargeReference {
		return s.get(802, "WDisChaRteMax"), in
	}
	return in, in
}

// window is the battery power of a device that reads model 124 as a power
// window (Fronius GEN24): its own self-consumption power own, kept at or
// below OutWRte with the DISCHARGE bit and at or above −InWRte with the
// CHARGE bit; a negative OutWRte forces charging, a negative InWRte
// forces discharging. Of bounds that cross (the two rates of one power
// cut to different resolutions), the CHARGE bit's is applied last and
// holds.
func (s *Simulator) window(own float64) float64 {
	outRef, inRef := s.rateRefs()
	mod := int(s.get(124, "StorCtl_Mod"))
	if mod&storCtlDischarge != 0 {
		own = min(own, s.get(124, "OutWRte")/100*outRef)
	}
	if mod&storCtlCharge != 0 {
		own = max(own, -s.get(124, "InWRte")/100*inRef)
	}
	return own
}

// target is the battery power the inverter sets for the given PV and load:
// the mode's power within the power limits, and 0 when the battery is
// disconnected, empty and asked to discharge, or full and asked to charge.
// Under local control it is self-consumption within the hardware limits,
// model 124 aside.
func (s *Simulator) target(pv, load float64) float64 {
	if !s.connected() {
		return 0
	}
	mode, p := s.command()
	if mode == ModeSelfConsumption || s.local {
		p = load - pv
	}
	if s.cfg.PowerWindow && !s.local {
		p = s.window(load - pv)
	}
	chargeMax := s.cfg.MaxChargeW
	if !s.local {
		chargeMax = min(chargeMax, max(s.get(124, "WChaMax"), 0))
		if s.get(124, "ChaGriSet") == chaGriSetPV {
			chargeMax = min(chargeMax, max(pv, 0))
		}
	}
	p = clamp(p, -chargeMax, s.cfg.MaxDischargeW)
	if p > 0 && s.energyWh <= 0 || p < 0 && s.energyWh >= s.cfg.CapacityWh {
		return 0
	}
	return p
}

// revertAt returns when the active model 124 command reverts, if it will.
func (s *Simulator) revertAt() (time.Time, bool) {
	rv := s.get(124, "InOutWRte_RvrtTms")
	if rv <= 0 || s.get(124, "StorCtl_Mod") == 0 {
		return time.Time{}, false
	}
	return s.lastCtl.Add(time.Duration(rv) * time.Second), true
}

func (s *Simulator) checkRevert(t time.Time) {
	at, ok := s.revertAt()
	if !ok || t.Before(at) {
		return
	}
	s.log.Info("storage command reverted by timer",
		"storctl_mod", s.get(124, "StorCtl_Mod"),
		"rvrt_s", s.get(124, "InOutWRte_RvrtTms"),
		"at", at)
	s.setRaw(124, "StorCtl_Mod", 0)
	s.reverted = true
}

// pvAt is a sine over daylight, 06:00 to 18:00 in t's location.
func (s *Simulator) pvAt(t time.Time) float64 {
	if !math.IsNaN(s.pinPV) {
		return s.pinPV
	}
	h := hourOfDay(t)
	if h <= 6 || h >= 18 {
		return 0
	}
	return s.cfg.PVPeakW * math.Sin(math.Pi*(h-6)/12)
}

// loadAt is a base load with a morning peak around 07:30 and an evening
// peak around 19:00.
func (s *Simulator) loadAt(t time.Time) float64 {
	if !math.IsNaN(s.pinLoad) {
		return s.pinLoad
	}
	h := hourOfDay(t)
	bump := func(centre, width, height float64) float64 {
		d := (h - centre) / width
		return height * math.Exp(-d*d/2)
	}
	return s.cfg.BaseLoadW + bump(7.5, 1, 1200) + bump(19, 1.5, 2000)
}

func hourOfDay(t time.Time) float64 {
	return float64(t.Hour()) + float64(t.Minute())/60 + float64(t.Second())/3600 +
		float64(t.Nanosecond())/3600e9
}

func (s *Simulator) socPct() float64 { return s.energyWh / s.cfg.CapacityWh * 100 }

func (s *Simulator) connected() bool { return s.get(802, "SetOp") != setOpDisconnect }

// cellV returns the minimum, maximum and mean cell voltage: open-circuit
// voltage linear in SoC, less the drop across the cells' resistance, with a
// spread that widens towards empty and full. Pinned values win.
func (s *Simulator) cellV() (minV, maxV, avgV float64) {
	soc := s.energyWh / s.cfg.CapacityWh
	ocv := cellVEmpty + (cellVFull-cellVEmpty)*soc
	amps := s.batt / (cellsInSeries * ocv)
	avg := ocv - amps*cellR
	spread := 0.010 + 0.040*math.Abs(soc-0.5)
	minV = clamp(avg-spread/2, cellVLimitMin, cellVLimitMax)
	maxV = clamp(avg+spread/2, cellVLimitMin, cellVLimitMax)
	if !math.IsNaN(s.pinCellMin) {
		minV = s.pinCellMin
	}
	if !math.IsNaN(s.pinCellMax) {
		maxV = s.pinCellMax
	}
	return minV, maxV, (minV + maxV) / 2
}

func (s *Simulator) packV() float64 {
	_, _, avg := s.cellV()
	return cellsInSeries * avg
}
