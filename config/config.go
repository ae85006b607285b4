// Package config turns the agent's one YAML file into a validated Config.
// Every problem is reported with the file's line: unknown keys, values that
// do not decode, and what each package says of its own settings (drivers of
// a link, safety of the limits, uplink of the broker and certificates),
// which config only places on the line that set them. Validation reads the
// files the config names and nothing else: no device, no network.
//
// Config holds the file's defaults, and converts its sections into the
// settings each package takes.
package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/safety"
	"github.com/hearth-energy/hearth/uplink"
)

// Config is the agent's whole configuration: one YAML file. The zero value
// is not useful; use Load or Parse, which apply defaults and
// validate.
type Config struct {
	// Path is the file the config was read from ("" when parsed from
	// memory): the file hearth reads again to reload its keys.
	Path string `yaml:"-"`

	GatewayID     string `yaml:"gateway_id"`
	DataDir       string `yaml:"data_dir"`
	DiagSocket    string `yaml:"diag_socket"`
	DiagGroup     string `yaml:"diag_group"`
	MetricsListen string `yaml:"metrics_listen"`
	// HTTPListen is host:port of the local web page (empty: none).
	// HTTPPasswordHash, made by `hearth config hash-password`, is the
	// hash of the password that lets the page change the local mode;
	// empty: the page is read-only.
	HTTPListen        string `yaml:"http_listen"`
	HTTPPasswordHash  string `yaml:"http_password_hash"`
	AssumeClockSynced bool   `yaml:"assume_clock_synced"`
	// ProfileFiles are register-map files (YAML) whose profiles every
	// device may name, besides the built-in ones. Relative paths are taken
	// from the config file's folder.
	ProfileFiles []string       `yaml:"profile_files"`
	Devices      []DeviceConfig `yaml:"devices"`
	Safety       SafetyConfig   `yaml:"safety"`
	Uplink       UplinkConfig   `yaml:"uplink"`
	Buffer       BufferConfig   `yaml:"buffer"`
	// WatchdogDevice is the Linux hardware watchdog (e.g. /dev/watchdog),
	// fed only while the poll and control loops are healthy; empty: none.
	WatchdogDevice string     `yaml:"watchdog_device"`
	GPIO           GPIOConfig `yaml:"gpio"`

	warnings []Error // risky but valid settings, found by Parse and Load
}

// GPIOConfig names the optional GPIO pins, by their periph names (such as
// GPIO17); an empty name means the pin is not used.
type GPIOConfig struct {
	// EStop is the emergency-stop input; engaged it forces 0 W at once.
	EStop string `yaml:"estop"`
	// EStopActiveHigh says the stop is engaged when the input is high;
	// by default it is engaged when low (a normally-closed loop to ground,
	// so a cut wire stops too).
	EStopActiveHigh bool `yaml:"estop_active_high"`
	// Contactor is an output driven high while the battery may run and
	// low when the e-stop is engaged.
	Contactor string `yaml:"contactor"`
	// StatusLED is driven high while safety is ok, and blinks on a trip.
	StatusLED string `yaml:"status_led"`
}

// DeviceConfig is one Modbus device.
type DeviceConfig struct {
	Name string `yaml:"name"`
	// Profile names the device's register map: sunspec (discovered), a
	// built-in profile, or the name of a profile in profile_files.
	Profile string `yaml:"profile"`
	// ProfileFiles are profile files for this device only; they are
	// searched before the top-level ones.
	ProfileFiles []string `yaml:"profile_files"`
	Transport    string   `yaml:"transport"`
	Address      string   `yaml:"address"`
	Baud         int      `yaml:"baud"`
	Parity       string   `yaml:"parity"`
	StopBits     int      `yaml:"stop_bits"`
	UnitID       int      `yaml:"unit_id"`
	PollInterval Duration `yaml:"poll_interval"`
	Timeout      Duration `yaml:"timeout"`
	// Retries is how many times a failed request is repeated before the
	// device is marked down and probed on a back-off schedule.
	Retries int `yaml:"retries"`
	// MaxBackoff caps the pause between probes of a device marked down.
	MaxBackoff Duration `yaml:"max_backoff"`
	// InterRequestGap is the quiet time the link keeps between two
	// requests (to any device on it); RTU lines always keep 3.5 characters.
	// Devices sharing a link share the largest gap any of them asks for.
	InterRequestGap Duration `yaml:"inter_request_gap"`
	// AllowUnguardedControl lets hearth command a device whose profile
	// says it has no timeout of its own (control.timeout.kind none): if
	// the agent dies mid-lease, the battery holds the last command until
	// hearth starts again and releases it. Without it such a device is
	// only read.
	AllowUnguardedControl bool `yaml:"allow_unguarded_control"`
	// UnguardedMaxW bounds the power, charging or discharging, hearth
	// commands a device with no timeout of its own (allow_unguarded_control):
	// what the battery holds at most if the agent dies mid-lease. nil:
	// DefaultUnguardedMaxW.
	UnguardedMaxW *float64 `yaml:"unguarded_max_w"`

	// profile is the register map Profile resolved to at validation.
	profile *drivers.Profile
}

// Bounds of devices[].unguarded_max_w: the default is a low power a
// battery left on its last command for hours does no harm with (a house's
// base load, a slow charge), the maximum beyond any home battery.
const (
	DefaultUnguardedMaxW = 1000
	MaxUnguardedMaxW     = 50000
)

// UnguardedCapW is the device's unguarded_max_w, or its default.
func (d DeviceConfig) UnguardedCapW() float64 {
	if d.UnguardedMaxW == nil {
		return DefaultUnguardedMaxW
	}
	return *d.UnguardedMaxW
}

// RegisterMap returns the profile the device's profile key resolved to
// when the config was validated; nil for a config not built by
// Parse.
func (d DeviceConfig) RegisterMap() *drivers.Profile { return d.profile }

// SafetyConfig holds the local limits that hold whatever the cloud says.
type SafetyConfig struct {
	SocMinPct     float64  `yaml:"soc_min_pct"`
	SocMaxPct     float64  `yaml:"soc_max_pct"`
	MaxChargeW    float64  `yaml:"max_charge_w"`
	MaxDischargeW float64  `yaml:"max_discharge_w"`
	RampWPerS     float64  `yaml:"ramp_w_per_s"`
	MaxReadingAge Duration `yaml:"max_reading_age"`
	CellVMin      float64  `yaml:"cell_v_min"`
	CellVMax      float64  `yaml:"cell_v_max"`
	TempCMin      float64  `yaml:"temp_c_min"`
	TempCMax      float64  `yaml:"temp_c_max"`
	ExportLimitW  *float64 `yaml:"export_limit_w"`
	// ImportLimitW bounds grid import (by the meter) by capping charge.
	ImportLimitW *float64 `yaml:"import_limit_w"`
	// SiteMaxDischargeW and SiteMaxChargeW bound the sum over every
	// device (max_discharge_w and max_charge_w bound each device).
	SiteMaxDischargeW *float64 `yaml:"site_max_discharge_w"`
	SiteMaxChargeW    *float64 `yaml:"site_max_charge_w"`
	// ChargeTempCMin: no charging while the coldest cell is at or below.
	ChargeTempCMin float64  `yaml:"charge_temp_c_min"`
	MaxLease       Duration `yaml:"max_lease"`
	Fallback       string   `yaml:"fallback"`
	// SocHysteresisPct is how far inside the SoC window a SoC trip clears.
	SocHysteresisPct float64 `yaml:"soc_hysteresis_pct"`
	// ClockSkew is how far a setpoint's issued_at may be ahead of the clock.
	ClockSkew Duration `yaml:"clock_skew"`
	// RevertTimeout is the device's revert timer (model 124
	// InOutWRte_RvrtTms); the command is refreshed every third of it.
	RevertTimeout Duration `yaml:"revert_timeout"`
	// EffectiveWithin is how long a device may take to follow a command
	// before a not_effective event.
	EffectiveWithin Duration `yaml:"effective_within"`
	// MeterDevice names the device that measures grid power at the site
	// connection; needed by self_consumption. MeterPoint is its point,
	// positive exporting.
	MeterDevice string `yaml:"meter_device"`
	MeterPoint  string `yaml:"meter_point"`
}

// UplinkConfig is the MQTT connection to the cloud.
type UplinkConfig struct {
	Broker string `yaml:"broker"`
	// Brokers lists the nodes of a broker cluster (set it or Broker).
	Brokers      []string          `yaml:"brokers"`
	ClientID     string            `yaml:"client_id"`
	Username     string            `yaml:"username"`
	PasswordFile string            `yaml:"password_file"`
	CAFile       string            `yaml:"ca_file"`
	CertFile     string            `yaml:"cert_file"`
	KeyFile      string            `yaml:"key_file"`
	TopicPrefix  string            `yaml:"topic_prefix"`
	SetpointKeys map[string]string `yaml:"setpoint_keys"`
	// RevokedKeys are key ids whose signatures are refused whatever
	// setpoint_keys says; a running lease signed by one ends at once on
	// reload (SIGHUP, hearth keys reload).
	RevokedKeys []string `yaml:"revoked_keys"`
	// AllowUnsigned re-allows unsigned setpoints when no key is in force.
	// Without it, a gateway that once had setpoint_keys (a fact kept with
	// its lease state) refuses every setpoint when none is left.
	AllowUnsigned bool     `yaml:"allow_unsigned"`
	BootDelay     Duration `yaml:"boot_delay"`
	// BackoffMin and BackoffMax shape the waits between reconnect rounds;
	// KeepAlive is the MQTT keepalive; CleanSession asks the broker not to
	// keep the session (setpoints sent while offline are then lost, and
	// the cloud must resend them). Zero: uplink's defaults.
	BackoffMin   Duration `yaml:"backoff_min"`
	BackoffMax   Duration `yaml:"backoff_max"`
	KeepAlive    Duration `yaml:"keepalive"`
	CleanSession bool     `yaml:"clean_session"`
	// Heartbeat is how often the retained online status is published
	// again with a fresh ts (the cloud's liveness signal).
	Heartbeat Duration `yaml:"heartbeat"`
	// TelemetryFormat is lean (the default) or json (the format of
	// earlier versions); TelemetryWindow gathers live readings this long
	// into one message (0: each poll cycle's at once).
	TelemetryFormat string    `yaml:"telemetry_format"`
	TelemetryWindow *Duration `yaml:"telemetry_window"`
}

// DefaultTelemetryWindow is how long live readings are gathered into one
// message when uplink.telemetry_window is not set.
const DefaultTelemetryWindow = 5 * time.Second

// Window returns telemetry_window, or its default when unset.
func (u UplinkConfig) Window() time.Duration {
	if u.TelemetryWindow == nil {
		return DefaultTelemetryWindow
	}
	return u.TelemetryWindow.D()
}

// Nodes returns the broker URLs: brokers, or broker alone.
func (u UplinkConfig) Nodes() []string {
	return uplink.Config{Broker: u.Broker, Brokers: u.Brokers}.Nodes()
}

// BufferConfig bounds the on-disk telemetry buffer.
type BufferConfig struct {
	MaxBytes ByteSize `yaml:"max_bytes"`
	// CommitInterval is how long readings wait in memory for one commit
	// while the uplink is down: the window a power cut can take (reported
	// as a gap) against the bytes each reading costs the SD card.
	CommitInterval Duration `yaml:"commit_interval"`
}

// Defaults applied where the file is silent.
const (
	DefaultDataDir      = "/var/lib/hearth"
	DefaultDiagSocket   = "/run/hearth/hearth.sock"
	DefaultPollInterval = time.Second
	// DefaultMaxBytes holds a week of 1 Hz readings from four devices at
	// roughly 300 bytes each on disk.
	DefaultMaxBytes = 256 << 20
	// DefaultCommitInterval matches the 5 s a reading waits in memory for
	// the broker with a healthy uplink: a crash costs the same window
	// either way.
	DefaultCommitInterval = 5 * time.Second
)

func defaultConfig() Config {
	return Config{
		DataDir:    DefaultDataDir,
		DiagSocket: DefaultDiagSocket,
		Safety: SafetyConfig{
			SocMinPct:     10,
			SocMaxPct:     95,
			MaxChargeW:    2500,
			MaxDischargeW: 2500,
			RampWPerS:     1000,
			MaxReadingAge: Duration(10 * time.Second),
			CellVMin:      2.8,
			CellVMax:      3.65,
			TempCMin:      0,
			TempCMax:      50,
			MaxLease:      Duration(24 * time.Hour),
			Fallback:      string(hearth.ModeAuto),

			SocHysteresisPct: safety.DefaultSoCHysteresisPct,
			ClockSkew:        Duration(safety.DefaultClockSkew),
			RevertTimeout:    Duration(60 * time.Second),
			EffectiveWithin:  Duration(safety.DefaultEffectiveWithin),
			ChargeTempCMin:   safety.DefaultChargeTempCMin,
			MeterPoint:       "grid_power_w",
		},
		Uplink: UplinkConfig{
			TopicPrefix: uplink.DefaultTopicPrefix,
			BootDelay:   Duration(30 * time.Second),
		},
		Buffer: BufferConfig{MaxBytes: DefaultMaxBytes, CommitInterval: Duration(DefaultCommitInterval)},
	}
}

func defaultDevice() DeviceConfig {
	return DeviceConfig{
		Profile:      "sunspec",
		Transport:    "tcp",
		Baud:         9600,
		Parity:       "N",
		StopBits:     1,
		UnitID:       1,
		PollInterval: Duration(DefaultPollInterval),
		Timeout:      Duration(drivers.DefaultTimeout),
		Retries:      drivers.DefaultRetries,
		MaxBackoff:   Duration(drivers.DefaultMaxBackoff),
	}
}

// applyDeviceDefaults fills what the file leaves out of each device. The
// lines index says which keys were present, so an explicit unit_id 0 (valid
// on Modbus TCP) is kept.
func applyDeviceDefaults(c *Config, lines map[string]int) {
	def := defaultDevice()
	for i := range c.Devices {
		d := &c.Devices[i]
		has := func(key string) bool {
			_, ok := lines[fmt.Sprintf("devices[%d].%s", i, key)]
			return ok
		}
		if !has("profile") {
			d.Profile = def.Profile
		}
		if !has("transport") {
			d.Transport = def.Transport
		}
		if !has("baud") {
			d.Baud = def.Baud
		}
		if !has("parity") {
			d.Parity = def.Parity
		}
		if !has("stop_bits") {
			d.StopBits = def.StopBits
		}
		if !has("unit_id") {
			d.UnitID = def.UnitID
		}
		if !has("poll_interval") {
			d.PollInterval = def.PollInterval
		}
		if !has("timeout") {
			d.Timeout = def.Timeout
		}
		if !has("retries") {
			d.Retries = def.Retries
		}
		if !has("max_backoff") {
			d.MaxBackoff = def.MaxBackoff
		}
	}
}

// Error is one problem in a config file, at a line.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errors is every problem found in a config file, in line order.
type Errors []Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Load reads and validates the config file at path, and checks that the
// files it names (certificates, password, profiles) can be read and are
// what they should be. On any problem it returns Errors naming each line;
// it touches nothing but the files.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parse(path, data, true)
}

// Read reads and validates the config file at path like Load, but does
// not check the files it names beyond the profiles: for the steps of
// commissioning that come before the certificates exist.
func Read(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parse(path, data, false)
}

var lineRe = regexp.MustCompile(`^line (\d+): (.*)$`)
var notFoundRe = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

// Parse parses and validates a config held in memory; name is used in
// error messages, and relative profile paths are taken from its folder.
// Of the files the config names it reads only the profiles: a config may
// be written before its certificates exist (hearth config init, then
// hearth cert request). Load checks them too.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, false)
}

func parse(name string, data []byte, files bool) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(name, err)}
	}
	cfg := defaultConfig()
	var errs Errors
	if len(root.Content) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		err := dec.Decode(&cfg)
		var te *yaml.TypeError
		switch {
		case errors.As(err, &te):
			for _, msg := range te.Errors {
				errs = append(errs, typeError(name, msg))
			}
		case err != nil:
			errs = append(errs, syntaxError(name, err))
		}
	}
	lines := map[string]int{}
	if len(root.Content) > 0 {
		indexLines(root.Content[0], "", lines)
	}
	explainTypeErrors(errs, lines)
	applyDeviceDefaults(&cfg, lines)
	v := validator{file: name, dir: filepath.Dir(name), lines: lines, files: files}
	v.validate(&cfg)
	// A value that failed to decode is reported once, by the decoder.
	reported := map[int]bool{}
	for _, e := range errs {
		reported[e.Line] = true
	}
	for _, e := range v.errs {
		if e.Line == 0 || !reported[e.Line] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	cfg.Path = name
	cfg.warnings = v.warnings(&cfg)
	sort.SliceStable(cfg.warnings, func(i, j int) bool { return cfg.warnings[i].Line < cfg.warnings[j].Line })
	return &cfg, nil
}

func syntaxError(file string, err error) Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Error{File: file, Line: n, Msg: m[2]}
	}
	return Error{File: file, Msg: msg}
}

func typeError(file, msg string) Error {
	m := lineRe.FindStringSubmatch(msg)
	if m == nil {
		return Error{File: file, Msg: msg}
	}
	n, _ := strconv.Atoi(m[1])
	text := m[2]
	if k := notFoundRe.FindStringSubmatch(text); k != nil {
		text = fmt.Sprintf("unknown key %q", k[1])
		if near := nearestKey(k[1], keysOf(k[2])); near != "" {
			text += fmt.Sprintf(" (did you mean %q?)", near)
		}
	}
	text = strings.ReplaceAll(text, "cannot unmarshal !!str ", "cannot use string ")
	return Error{File: file, Line: n, Msg: text}
}

// indexLines records the line of every key path, such as "safety.soc_min_pct"
// or "devices[0].address".
func indexLines(n *yaml.Node, path string, lines map[string]int) {
	if path != "" {
		if _, ok := lines[path]; !ok {
			lines[path] = n.Line
		}
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			lines[p] = k.Line
			indexLines(n.Content[i+1], p, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			indexLines(c, fmt.Sprintf("%s[%d]", path, i), lines)
		}
	}
}

type validator struct {
	file  string
	dir   string // relative profile files are found from here
	lines map[string]int
	files bool // check the files the config names
	errs  Errors
}

// errorf records a problem at the line of path, or of its nearest parent
// that appears in the file.
func (v *validator) errorf(path, format string, args ...any) {
	line := 0
	for p := path; p != ""; {
		if l, ok := v.lines[p]; ok {
			line = l
			break
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	v.errs = append(v.errs, Error{File: v.file, Line: line, Msg: path + ": " + fmt.Sprintf(format, args...)})
}

var gatewayIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
var deviceNameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

func (v *validator) validate(c *Config) {
	if c.GatewayID == "" {
		v.errorf("gateway_id", "required")
	} else if !gatewayIDRe.MatchString(c.GatewayID) {
		v.errorf("gateway_id", "%q must be letters, digits, '_', '.' or '-' (no '/', '+' or '#': it is part of MQTT topics)", c.GatewayID)
	}
	if c.DataDir == "" {
		v.errorf("data_dir", "required")
	}
	if c.DiagSocket == "" {
		v.errorf("diag_socket", "required")
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			v.errorf("metrics_listen", "want host:port: %v", err)
		}
	}
	if c.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			v.errorf("http_listen", "want host:port: %v", err)
		}
	}
	if c.HTTPPasswordHash != "" {
		if _, err := ParsePasswordHash(c.HTTPPasswordHash); err != nil {
			v.errorf("http_password_hash", "%v", err)
		}
	}
	if len(c.Devices) == 0 {
		v.errorf("devices", "at least one device is required")
	}
	names := map[string]bool{}
	for i, d := range c.Devices {
		v.device(fmt.Sprintf("devices[%d]", i), d, names)
	}
	v.profiles(c)
	v.safety(c.Safety)
	v.control(c)
	v.bounds(c)
	v.uplink(c)
	if c.Buffer.MaxBytes < 1<<20 {
		v.errorf("buffer.max_bytes", "%d is below the 1 MiB minimum", c.Buffer.MaxBytes)
	}
	if ci := c.Buffer.CommitInterval.D(); ci < 0 || ci > time.Minute {
		v.errorf("buffer.commit_interval", "%s is outside 0s..1m (0 commits every poll cycle)", ci)
	}
}

func (v *validator) device(p string, d DeviceConfig, names map[string]bool) {
	switch {
	case d.Name == "":
		v.errorf(p+".name", "required")
	case !deviceNameRe.MatchString(d.Name):
		v.errorf(p+".name", "%q must be lower-case letters, digits and '_', starting with a letter", d.Name)
	case names[d.Name]:
		v.errorf(p+".name", "%q is used by another device", d.Name)
	}
	names[d.Name] = true
	if d.Profile == "" {
		v.errorf(p+".profile", "required")
	}
	v.attach(p+".", d.Link().Validate(), nil)
	if d.UnitID < 0 || d.UnitID > 247 {
		v.errorf(p+".unit_id", "%d is outside 0..247", d.UnitID)
	}
	if d.PollInterval.D() < 100*time.Millisecond || d.PollInterval.D() > time.Hour {
		v.errorf(p+".poll_interval", "%s is outside 100ms..1h", d.PollInterval)
	}
	if w := d.UnguardedMaxW; w != nil && (math.IsNaN(*w) || *w < 0 || *w > MaxUnguardedMaxW) {
		v.errorf(p+".unguarded_max_w", "%g W is outside 0..%d W", *w, MaxUnguardedMaxW)
	}
}

// Link returns the settings of the device's physical link. Devices that
// share a link share its gap: the agent gives the link the largest any of
// them asks for.
func (d DeviceConfig) Link() drivers.LinkConfig {
	return drivers.LinkConfig{
		Transport: d.Transport, Address: d.Address,
		Baud: d.Baud, Parity: d.Parity, StopBits: d.StopBits,
		Timeout: d.Timeout.D(), Gap: d.InterRequestGap.D(), Retries: d.Retries, MaxBackoff: d.MaxBackoff.D(),
	}
}

// LinkKey names the device's physical link: devices with the same key
// share one bus owner.
func (d DeviceConfig) LinkKey() string { return d.Transport + " " + d.Address }

func (v *validator) safety(s SafetyConfig) {
	v.attach("safety.", s.Limits().Validate(), nil)
}

// Limits returns the limits the safety section sets.
func (s SafetyConfig) Limits() safety.Limits {
	l := safety.Limits{
		SoCMinPct: s.SocMinPct, SoCMaxPct: s.SocMaxPct, SoCHysteresisPct: s.SocHysteresisPct,
		MaxChargeW: hearth.Watts(s.MaxChargeW), MaxDischargeW: hearth.Watts(s.MaxDischargeW),
		RampWPerS: s.RampWPerS, MaxReadingAge: s.MaxReadingAge.D(),
		CellVMin: s.CellVMin, CellVMax: s.CellVMax, CellVHysteresis: safety.DefaultCellVHysteresis,
		TempCMin: s.TempCMin, TempCMax: s.TempCMax, TempHysteresisC: safety.DefaultTempHysteresisC,
		MaxLease: s.MaxLease.D(), ClockSkew: s.ClockSkew.D(), Fallback: hearth.Mode(s.Fallback),
		ChargeTempCMin: s.ChargeTempCMin, EffectiveWithin: s.EffectiveWithin.D(),
		ExportLimitW: watts(s.ExportLimitW), ImportLimitW: watts(s.ImportLimitW),
		SiteMaxDischargeW: watts(s.SiteMaxDischargeW), SiteMaxChargeW: watts(s.SiteMaxChargeW),
	}
	return l
}

func watts(f *float64) *hearth.Watts {
	if f == nil {
		return nil
	}
	w := hearth.Watts(*f)
	return &w
}

// control checks the safety keys that depend on the rest of the config,
// and the watchdog and GPIO sections. It touches no device.
func (v *validator) control(c *Config) {
	s := c.Safety
	if r := s.RevertTimeout.D(); r < 3*time.Second || r > 65534*time.Second {
		v.errorf("safety.revert_timeout", "%s is outside 3s..65534s (the device counts whole seconds)", s.RevertTimeout)
	} else {
		for i, d := range c.Devices {
			if d.PollInterval.D() > r/3 {
				v.errorf(fmt.Sprintf("devices[%d].poll_interval", i), "%s is longer than a third of safety.revert_timeout (%s): a missed poll would let the device revert", d.PollInterval, s.RevertTimeout)
			}
		}
	}
	if s.EffectiveWithin.D() <= 0 {
		v.errorf("safety.effective_within", "must be above 0")
	}
	if s.MeterDevice != "" {
		var meter *DeviceConfig
		for i := range c.Devices {
			if c.Devices[i].Name == s.MeterDevice {
				meter = &c.Devices[i]
			}
		}
		switch {
		case meter == nil:
			v.errorf("safety.meter_device", "%q is not a configured device", s.MeterDevice)
		case s.MeterPoint == "":
			v.errorf("safety.meter_point", "required with meter_device")
		default:
			v.meterPoint(meter, s.MeterPoint)
		}
	}
	if c.WatchdogDevice != "" && !strings.HasPrefix(c.WatchdogDevice, "/") {
		v.errorf("watchdog_device", "%q must be an absolute path such as /dev/watchdog", c.WatchdogDevice)
	}
	pins := map[string]string{}
	for _, p := range []struct{ key, name string }{{"estop", c.GPIO.EStop}, {"contactor", c.GPIO.Contactor}, {"status_led", c.GPIO.StatusLED}} {
		if p.name == "" {
			continue
		}
		if other, ok := pins[p.name]; ok {
			v.errorf("gpio."+p.key, "pin %q is also gpio.%s", p.name, other)
		}
		pins[p.name] = p.key
	}
}

// meterPoint checks that the meter device can give the meter point: a
// SunSpec device only from a meter model (grid_power_w), a profile device
// from one of its numeric points. The problem is reported on the
// meter_point line, or on meter_device's when the point is the default.
func (v *validator) meterPoint(d *DeviceConfig, point string) {
	p := d.profile
	if p == nil {
		return // the profile is reported with the device
	}
	at, what := "safety.meter_point", fmt.Sprintf("%q", point)
	if _, ok := v.lines[at]; !ok {
		at, what = "safety.meter_device", fmt.Sprintf("meter_point %q (the default)", point)
	}
	report := func(format string, args ...any) {
		v.errorf(at, "%s: "+format, append([]any{what}, args...)...)
	}
	if p.Discovery == "sunspec" {
		if point != drivers.GridPowerPoint {
			report("device %q is a SunSpec device, which gives grid power only as %s, from a meter model (201-204): use that point, on the device whose chain has the meter", d.Name, drivers.GridPowerPoint)
		}
		return
	}
	var names []string
	for _, pt := range p.Points {
		if pt.Type == "sunssf" || pt.Type == "string" {
			continue
		}
		if pt.Name == point {
			if pt.Type == "enum" || pt.Type == "bitfield" {
				report("point of profile %q is a %s, not a power", p.Name, pt.Type)
			}
			return
		}
		if strings.HasSuffix(pt.Name, "_w") {
			names = append(names, pt.Name)
		}
	}
	have := "it has no power point"
	if len(names) > 0 {
		have = "its power points: " + strings.Join(names, ", ")
	}
	report("profile %q of device %q has no such point, so the meter would never give grid power: name the profile's point for grid power, positive exporting (%s)", p.Name, d.Name, have)
}

func (v *validator) uplink(c *Config) {
	u := c.Uplink
	// The gateway id is checked above, by the stricter rule.
	v.attach("uplink.", c.session("").Validate(), map[string]string{"gateway_id": ""})
	if v.files {
		if u.PasswordFile != "" {
			if _, err := os.ReadFile(u.PasswordFile); err != nil {
				v.errorf("uplink.password_file", "%v", err)
			}
		}
		v.attach("uplink.", c.session("").CheckFiles(), nil)
	}
	for _, r := range []struct {
		key      string
		v        Duration
		min, max time.Duration
		why      string
	}{
		{"backoff_min", u.BackoffMin, 100 * time.Millisecond, 10 * time.Minute, "the wait after a lost connection and between nodes"},
		{"backoff_max", u.BackoffMax, time.Second, time.Hour, "the longest wait between reconnect rounds"},
		{"keepalive", u.KeepAlive, 5 * time.Second, 65535 * time.Second, "MQTT keepalive; at most 65535s by the protocol"},
		{"heartbeat", u.Heartbeat, 10 * time.Second, time.Hour, "how often the online status is refreshed for the cloud's liveness check"},
	} {
		if d := r.v.D(); d != 0 && (d < r.min || d > r.max) {
			v.errorf("uplink."+r.key, "%s is outside %s..%s (%s)", d, r.min, r.max, r.why)
		}
	}
	if w := u.Window(); w < 0 || w > time.Minute {
		v.errorf("uplink.telemetry_window", "%s is outside 0s..1m (0 sends each poll cycle's readings at once)", w)
	}
	for id, key := range u.SetpointKeys {
		if _, err := decodeKey(key); err != nil {
			v.errorf("uplink.setpoint_keys."+id, "%v", err)
		}
	}
	for i, id := range u.RevokedKeys {
		if strings.TrimSpace(id) == "" {
			v.errorf(fmt.Sprintf("uplink.revoked_keys[%d]", i), "empty key id")
		}
	}
}

// Session returns the uplink's settings, with the password read from
// password_file. log is the session's logger.
func (c *Config) Session(log *slog.Logger) (uplink.Config, error) {
	password := ""
	if c.Uplink.PasswordFile != "" {
		b, err := os.ReadFile(c.Uplink.PasswordFile)
		if err != nil {
			return uplink.Config{}, fmt.Errorf("read uplink.password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	cfg := c.session(password)
	cfg.Logger = log
	return cfg, nil
}

func (c *Config) session(password string) uplink.Config {
	u := c.Uplink
	return uplink.Config{
		Broker: u.Broker, Brokers: u.Brokers, ClientID: u.ClientID, GatewayID: c.GatewayID, TopicPrefix: u.TopicPrefix,
		Username: u.Username, Password: password,
		CAFile: u.CAFile, CertFile: u.CertFile, KeyFile: u.KeyFile,
		BootDelayMax: u.BootDelay.D(),
		BackoffMin:   u.BackoffMin.D(), BackoffMax: u.BackoffMax.D(),
		KeepAlive: u.KeepAlive.D(), CleanSession: u.CleanSession, Heartbeat: u.Heartbeat.D(),
		TelemetryFormat: u.TelemetryFormat, TelemetryWindow: u.Window(),
	}
}

// attach places the FieldErrors in err, reported by the package that owns
// the settings, on the lines of prefix+field. rename maps a field to
// another path ("" for one reported elsewhere). A path already reported is
// not reported again.
func (v *validator) attach(prefix string, err error, rename map[string]string) {
	if err == nil {
		return
	}
	var fes hearth.FieldErrors
	if !errors.As(err, &fes) {
		v.errorf(strings.TrimSuffix(prefix, "."), "%v", err)
		return
	}
	for _, fe := range fes {
		path := prefix + fe.Field
		if to, ok := rename[fe.Field]; ok {
			if to == "" {
				continue
			}
			path = to
		}
		v.errorf(path, "%s", fe.Msg)
	}
}

// Duration is a time.Duration written in YAML as "1s", "500ms", "15m".
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a Go duration string and names the line on error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	x, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration %q (want e.g. 500ms, 1s, 15m)", n.Line, n.Value)}}
	}
	*d = Duration(x)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ByteSize is a size in bytes, written as a number or with a unit: "64MiB",
// "1GiB", "500MB".
type ByteSize int64

var sizeRe = regexp.MustCompile(`^\s*(\d+)\s*([KMG]i?B|B)?\s*$`)

// UnmarshalYAML parses a byte size and names the line on error.
func (s *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRe.FindStringSubmatch(n.Value)
	if m == nil || n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid size %q (want e.g. 268435456, 256MiB, 1GiB)", n.Line, n.Value)}}
	}
	x, _ := strconv.ParseInt(m[1], 10, 64)
	mult := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
	*s = ByteSize(x * mult)
	return nil
}

// decodeKey parses an ed25519 public key written in base64.
func decodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("not base64: %v", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("an ed25519 public key is %d bytes, got %d", ed25519.PublicKeySize, len(b))
	}
	return ed25519.PublicKey(b), nil
}

// profiles loads the profile files (reading files is all it does) and
// resolves every device's profile key: the device's own files first, then
// the top-level ones, then the built-in profiles. A broken file is
// reported with its own file, line and point, at the line naming it.
func (v *validator) profiles(c *Config) {
	broken := map[string]bool{}
	global := v.loadProfiles("profile_files", c.ProfileFiles, broken)
	for i := range c.Devices {
		d := &c.Devices[i]
		p := fmt.Sprintf("devices[%d]", i)
		own := v.loadProfiles(p+".profile_files", d.ProfileFiles, broken)
		if d.Profile == "" || (broken[d.Profile] && own[d.Profile] == nil && global[d.Profile] == nil) {
			continue // reported with the device, or with its file
		}
		if pr, ok := own[d.Profile]; ok {
			d.profile = pr
		} else if pr, ok := global[d.Profile]; ok {
			d.profile = pr
		} else if pr, err := drivers.EmbeddedProfile(d.Profile); err == nil {
			d.profile = pr
		} else {
			known := drivers.EmbeddedProfiles()
			for n := range own {
				known = append(known, n)
			}
			for n := range global {
				known = append(known, n)
			}
			sort.Strings(known)
			v.errorf(p+".profile", "%q is neither a built-in profile nor one in profile_files (known: %s)", d.Profile, strings.Join(known, ", "))
		}
	}
}

// loadProfiles parses each file of the list at key and returns the
// profiles by name. The names of files that fail, where they can be
// read, go in broken, so devices naming them are not reported twice.
func (v *validator) loadProfiles(key string, files []string, broken map[string]bool) map[string]*drivers.Profile {
	out := map[string]*drivers.Profile{}
	for i, f := range files {
		at := fmt.Sprintf("%s[%d]", key, i)
		if f == "" {
			v.errorf(at, "empty path")
			continue
		}
		path := f
		if !filepath.IsAbs(path) {
			path = filepath.Join(v.dir, path)
		}
		pr, err := drivers.LoadProfile(path)
		if err != nil {
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				v.errorf(at, "%v", e)
			}
			if data, err := os.ReadFile(path); err == nil {
				var head struct {
					Name string `yaml:"name"`
				}
				if yaml.Unmarshal(data, &head) == nil && head.Name != "" {
					broken[head.Name] = true
				}
			}
			continue
		}
		if _, dup := out[pr.Name]; dup {
			v.errorf(at, "profile %q is also defined by an earlier file", pr.Name)
			continue
		}
		out[pr.Name] = pr
	}
	return out
}
