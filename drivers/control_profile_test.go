package drivers

import (
	"strings"
	"testing"
	"time"
)

// TestControlErrorsNameFileLineAndKey: every mistake in a control section
// is reported with the file, the line and the key.
func TestControlErrorsNameFileLineAndKey(t *testing.T) {
	t.Parallel()
	src := `name: broken
points:
  - {name: power_w, address: 1, type: s16}
  - {name: soc_pct, address: 2, type: u16}
  - {name: cmd, address: 10, type: u16, writable: true, storage: flash}
  - {name: watts, address: 11, type: u16, writable: true, storage: ram, max: 5000}
  - {name: far, address: 20, type: u16, writable: true, storage: ram}
  - {name: tmo, address: 30, type: u16, writable: true, storage: ram, unit: h}
  - {name: ro, address: 40, type: u16, storage: flash}
control:
  requires:
    - {point: nope, equals: 4}
  arm:
    - {point: power_w, value: 1}
  setpoint:
    style: split
    charge: {point: watts, mode: {point: cmd, value: 70000}}
    discharge: {point: missing, mode: {point: cmd, value: 2}}
  timeout:
    kind: register
    point: tmo
    value: 5s
  groups:
    - [watts, far]
  budget:
    min_interval: 10s
  release:
    passive: true
    writes: [{point: cmd, value: 0}]
`
	_, err := ParseProfile("vendor.yaml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`vendor.yaml:9: point ro: storage is for writable points`,
		`vendor.yaml:12: control.requires.0.point: point "nope": no such point`,
		`vendor.yaml:12: control.requires.0.hint: required`,
		`vendor.yaml:14: control.arm.0: point "power_w" is not writable`,
		`vendor.yaml:17: control.setpoint.charge.mode: point cmd: 70000 encodes to 70000, outside u16's 0..65535`,
		`vendor.yaml:18: control.setpoint.discharge.point: point "missing": no such point`,
		`vendor.yaml:21: control.timeout.point: point "tmo": unit "h", want s or min`,
		`vendor.yaml:22: control.timeout.value: 5s: a device timeout below 10s`,
		`vendor.yaml:19: control.timeout.reverts_to: required`,
		`vendor.yaml:24: control.groups.0: points watts and far are not adjacent`,
		`vendor.yaml:26: control.budget.min_interval: point cmd is flash storage`,
		`vendor.yaml:27: control.release: passive release takes no writes`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

// TestDurationErrorNamesItsLine: a timeout or budget that is not a
// duration is reported at its own line, and decoding goes on, so a
// mistake further down the file is reported in the same run.
func TestDurationErrorNamesItsLine(t *testing.T) {
	t.Parallel()
	src := `name: broken
points:
  - {name: power_w, address: 1, type: s16}
  - {name: soc_pct, address: 2, type: u16}
  - {name: cmd, address: 10, type: u16, writable: true, storage: ram}
control:
  setpoint:
    style: signed
    signed: {point: cmd, sign: discharge_positive}
  timeout:
    kind: setting
    value: 90 seconds
    reverts_to: auto
  budget:
    min_interval: soon
    deadband_w: lots
  release:
    writes: [{point: cmd, value: 0}]
`
	_, err := ParseProfile("vendor.yaml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`vendor.yaml:12: "90 seconds" is not a duration`,
		`vendor.yaml:15: "soon" is not a duration`,
		`vendor.yaml:16: `, // deadband_w, decoded after the bad durations
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

// TestModel124SectionErrors: a discovery profile's model124 section is
// checked as a control section's budget is, at its line; it is refused
// on a fixed map.
func TestModel124SectionErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ src, want string }{
		{"name: x\ndiscovery: sunspec\nmodel124:\n  storage: eeprom\n", `x.yaml:4: model124.storage: "eeprom": want ram, flash or unknown`},
		{"name: x\ndiscovery: sunspec\nmodel124:\n  storage: flash\n  budget: {min_interval: 10s, deadband_w: 100}\n", `x.yaml:5: model124.budget.min_interval: model 124 is flash storage: a budget of at least 1m0s`},
		{"name: x\ndiscovery: sunspec\nmodel124:\n  budget: {min_interval: 1m}\n", `x.yaml:4: model124.budget.deadband_w: model 124 is unknown storage: a deadband above 0 W`},
		{"name: x\npoints:\n  - {name: a, address: 1, type: u16}\nmodel124: {storage: ram}\n", `x.yaml:4: model124: is for discovery: sunspec profiles`},
	} {
		_, err := ParseProfile("x.yaml", []byte(c.src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.src, err, c.want)
		}
	}
	p, err := ParseProfile("x.yaml", []byte("name: x\ndiscovery: sunspec\nmodel124: {storage: ram}\n"))
	if err != nil || p.Model124Writes().Storage != StorageRAM {
		t.Errorf("model124 storage ram: %v", err)
	}
	if p, err := EmbeddedProfile("fronius_gen24"); err != nil || p.Model124Writes().Storage != StorageFlash {
		t.Errorf("fronius_gen24 keeps model 124 in flash: %v", err)
	}
}

// TestWriteOnlyAndMinusErrors: a write-only point must be writable, is
// never read (requires, arm, reference), and is written whole with the
// other write-only points by every command and the release; minus names
// a readable point and does not chain; a leg gives point or points, and a
// sign only of the two hearth knows.
func TestWriteOnlyAndMinusErrors(t *testing.T) {
	t.Parallel()
	src := `name: broken
points:
  - {name: soc_pct, address: 2, type: u16}
  - {name: charge_w, address: 3, type: u16, unit: W}
  - {name: power_w, address: 4, type: u16, unit: W, minus: charge_w}
  - {name: twice_w, address: 5, type: u16, unit: W, minus: power_w}
  - {name: nowhere_w, address: 6, type: u16, unit: W, minus: nope}
  - {name: mode, address: 10, type: u16, writable: true, write_only: true, storage: ram}
  - {name: lo, address: 11, type: u16, writable: true, write_only: true, storage: ram}
  - {name: hi, address: 12, type: u16, writable: true, write_only: true, storage: ram}
  - {name: ro, address: 13, type: u16, write_only: true}
control:
  requires:
    - {point: mode, equals: 1, hint: set it}
  arm:
    - {point: lo, value: 0}
  setpoint:
    style: split
    unit: pct
    reference: power_w
    charge: {points: [lo, hi], mode: {point: mode, value: 1}}
    discharge: {point: lo, points: [hi], mode: {point: mode, value: 2}}
    zero: {sign: up, mode: {point: mode, value: 3}}
  timeout: {kind: setting, value: 60s, reverts_to: its own logic}
  release:
    writes: [{point: mode, value: 0}, {point: lo, value: 0}]
`
	_, err := ParseProfile("vendor.yaml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`vendor.yaml:6: point twice_w: minus point "power_w": is itself signed by another point`,
		`vendor.yaml:7: point nowhere_w: minus point "nope": no such point`,
		`vendor.yaml:11: point ro: write_only is for writable points`,
		`vendor.yaml:14: control.requires.0.point: point "mode" is write_only: the device does not read it back`,
		`vendor.yaml:16: control.arm.0: point "lo" is write_only`,
		`vendor.yaml:20: control.setpoint.reference: point "power_w" is the difference of two points`,
		`control.setpoint.discharge.points: give point or points, not both`,
		`control.setpoint.zero.sign: "up": want discharge_positive or charge_positive`,
		`control.setpoint.zero: does not write lo: write-only points are written as a complete set (`,
		`control.release.writes: does not write hi: write-only points are written as a complete set`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "control.setpoint.charge: does not write") {
		t.Errorf("the charge leg writes the whole set, yet:\n%v", err)
	}
}

// TestTimeoutPointWithScaleFactorIsRefused: the control loop counts a
// device it cannot reach at its last command for RevertTimeout, which is
// known before the device is read; a timeout point with sf: is encoded at
// the scale factor the device reports (90 s at sf 2 is 1, which the
// device runs as 100 s), so what it holds cannot be known in advance.
func TestTimeoutPointWithScaleFactorIsRefused(t *testing.T) {
	t.Parallel()
	src := `name: scaled_timeout
points:
  - {name: power_w, address: 1, type: s16, unit: W}
  - {name: soc_pct, address: 2, type: u16}
  - {name: cmd, address: 10, type: u16, writable: true, storage: ram}
  - {name: watts, address: 11, type: u16, unit: W, writable: true, storage: ram, max: 5000}
  - {name: tmo_s, address: 12, type: u16, unit: s, sf: tmo_sf, writable: true, storage: ram}
  - {name: tmo_sf, address: 13, type: sunssf}
control:
  setpoint:
    style: split
    charge: {point: watts, mode: {point: cmd, value: 1}}
    discharge: {point: watts, mode: {point: cmd, value: 2}}
  timeout:
    kind: register
    point: tmo_s
    value: 90s
    reverts_to: its own logic
  release:
    writes: [{point: cmd, value: 0}]
`
	_, err := ParseProfile("vendor.yaml", []byte(src))
	want := `vendor.yaml:16: control.timeout.point: point "tmo_s" has sf: tmo_sf`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want %q", err, want)
	}
}

// TestLapsesWithin: lapses_within is never below the timeout's value and
// not given to a device without a timeout; SMA's profile counts its
// command for 6 min, refreshing by its 5 min setting.
func TestLapsesWithin(t *testing.T) {
	t.Parallel()
	base := `name: x
points:
  - {name: power_w, address: 1, type: s16}
  - {name: soc_pct, address: 2, type: u16}
  - {name: cmd, address: 10, type: s16, writable: true, storage: ram}
control:
  setpoint:
    style: signed
    signed: {point: cmd, sign: discharge_positive}
  release:
    writes: [{point: cmd, value: 0}]
  timeout: `
	for _, c := range []struct{ timeout, want string }{
		{"{kind: setting, value: 5m, lapses_within: 4m, reverts_to: auto}", `x.yaml:12: control.timeout.lapses_within: 4m0s is below the timeout's value 5m0s`},
		{"{kind: none, lapses_within: 4m}", `x.yaml:12: control.timeout: kind none takes no point, value or lapses_within`},
	} {
		_, err := ParseProfile("x.yaml", []byte(base+c.timeout+"\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("timeout %s: %v, want %q", c.timeout, err, c.want)
		}
	}
	p, err := EmbeddedProfile("sma_storage")
	if err != nil {
		t.Fatal(err)
	}
	d := NewVendorDevice("sma", nil, 3, p, nil)
	if d.RevertTimeout() != 5*time.Minute || d.HoldsUpTo() != 6*time.Minute {
		t.Errorf("sma_storage: refreshed by %v, counted for %v; want 5m and 6m", d.RevertTimeout(), d.HoldsUpTo())
	}
}
