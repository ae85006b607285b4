// Package agent wires hearth together: it builds every part from a
// validated config (the buffer, the Modbus links and devices, the uplink,
// the control loop, the data path, the diagnostics API, the hardware),
// starts them in order and stops them in reverse. It is the only package
// that knows the concrete types; the parts know one another only through
// the small interfaces each defines.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/control"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/hw"
	"github.com/hearth-energy/hearth/runlock"
	"github.com/hearth-energy/hearth/safety"
	"github.com/hearth-energy/hearth/telemetry"
	"github.com/hearth-energy/hearth/uplink"
	"github.com/hearth-energy/hearth/web"
)

// Tuning that the config does not expose.
const (
	shutdownGrace = 4 * time.Second // SIGTERM to exit stays under 5 s
	birthRefresh  = 15 * time.Minute
)

// Agent is one gateway agent: New builds it, Run runs it.
type Agent struct {
	cfg      *config.Config
	log      *slog.Logger
	logLevel *slog.LevelVar
	logs     *diag.LogRing // recent log lines for the support bundle; nil: none
	clock    telemetry.Clock
	clocks   *hw.Clock // the wall and monotonic clocks everything reads

	runLocks runlock.Set     // gateway, socket, links: held from the start of New to the end of closeAll
	dataDir  *buffer.DirLock // held from the start of New to the end of closeAll
	store    *buffer.Store
	leases   *buffer.State // the control loop's lease state, apart from the buffer
	buses    []*drivers.Bus
	devices  []*device
	up       *uplink.Session
	ctl      *control.Controller

	events  *telemetry.Events
	writer  *telemetry.Writer
	deliver *telemetry.Deliverer
	state   *telemetry.StatePublisher

	closers []func() error // what Run opened for New's parts to use, closed last first

	conn *telemetry.ConnWatcher

	hist     *web.History        // per-minute means for the local page's plots; nil without http_listen
	lastGood *telemetry.LastGood // every point's last value, for points and the page

	mu   sync.Mutex
	keys keyState // the setpoint keys in force

	// buildTime is the binary's build time, a floor under true time, and
	// buildFrom where it came from (hw.BuildStamp).
	buildTime time.Time
	buildFrom string
}

// device is one configured device and what reads it.
type device struct {
	cfg     config.DeviceConfig
	drv     driver
	sunspec *drivers.SunSpecDevice // nil for profile devices, which have no storage controls
	bus     *drivers.Bus           // the device's link, shared with its neighbours
	profile string                 // the register map's name
	poller  *telemetry.Poller
	// vendor commands the device through its profile's control section;
	// nil when it has none, or none hearth may use (no device-side timeout
	// and no allow_unguarded_control).
	vendor *drivers.VendorDevice
	// window says the SunSpec device reads model 124 as a power window
	// (profile storage_control: window).
	window bool
	// m124 is where the SunSpec device keeps model 124, and the write
	// budget that paces it (profile model124).
	m124 drivers.Model124
}

// driver is a device as drivers reads it.
type driver interface {
	telemetry.Device
	Identity() drivers.Identity
}

var (
	_ driver = (*drivers.SunSpecDevice)(nil)
	_ driver = (*drivers.ProfileDevice)(nil)
)

// New builds an agent from a validated config. It opens the buffer and
// prepares every part but starts nothing and dials nothing.
func New(cfg *config.Config, log *slog.Logger) (a *Agent, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	boot := make([]byte, 8)
	rand.Read(boot)
	clocks := hw.NewClock()
	a = &Agent{cfg: cfg, log: log, logLevel: new(slog.LevelVar), clocks: clocks}
	a.clock = telemetry.Clock{Boot: hex.EncodeToString(boot), Since: clocks.Since, Now: clocks.Wall, Synced: a.clockSynced}
	built := a // a itself is nil once an error is returned
	// One agent per gateway: nothing is opened before the locks are held.
	if a.runLocks, err = lockRuntime(cfg); err != nil {
		return nil, err
	}
	if a.dataDir, err = buffer.LockDir(cfg.DataDir); err != nil {
		a.runLocks.Release()
		return nil, err
	}
	defer func() {
		if err != nil {
			built.closeAll()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	// The lease state file first: it keeps the buffer's high-water marks
	// too, which a fresh buffer (the old one corrupt) starts above.
	if a.leases, err = openLeaseState(cfg.DataDir, log); err != nil {
		return nil, err
	}
	a.store, err = buffer.Open(filepath.Join(cfg.DataDir, "hearth.db"), buffer.Options{
		Logger: log.With("component", "buffer"), MaxBytes: int64(cfg.Buffer.MaxBytes), Now: clocks.Wall,
		Marks: a.leases,
	})
	if err != nil {
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	if err := a.leases.UseMirror(a.store); err != nil {
		return nil, fmt.Errorf("open lease state: %w", err)
	}
	if err := a.openDevices(); err != nil {
		return nil, err
	}
	ucfg, err := cfg.Session(log) // the session names itself component=uplink
	if err != nil {
		return nil, err
	}
	if a.up, err = uplink.New(ucfg); err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	a.up.SetBirth(a.birth())

	fresh := &telemetry.Fresh{}
	a.deliver = telemetry.NewDeliverer(telemetry.DelivererOptions{
		Outbox: a.store, Uplink: a.up, Fresh: fresh, Clock: a.clock, Logger: log.With("component", "deliver"),
		Window: cfg.Uplink.Window(),
	})
	a.events = telemetry.NewEvents(a.store, clocks.Wall, a.deliver.Wake, log)
	if err := a.newControl(); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	a.state = telemetry.NewStatePublisher(a.up, a.ctl.State, log)
	a.conn = telemetry.NewConnWatcher(telemetry.ConnWatcherOptions{
		Record: a.events.Record, Connected: a.state.Changed,
		Refresh: func() { a.up.SetBirth(a.birth()) }, RefreshEvery: birthRefresh})
	a.up.OnLink(func(ch uplink.LinkChange) {
		a.deliver.LinkChanged(ch.Up)
		if ch.Up {
			a.conn.Up(ch.Broker)
		} else {
			a.conn.Lost(ch.Broker, ch.Err)
		}
	})
	a.ctl.OnState(func(hearth.State) { a.state.Changed() })
	a.writer = telemetry.NewWriter(telemetry.WriterOptions{
		Store: a.store, Fresh: fresh, Clock: a.clock, CycleSize: len(a.devices), CommitInterval: cfg.Buffer.CommitInterval.D(),
		StoreAfter: telemetry.StoreAfter + cfg.Uplink.Window(), // the window's readings wait in memory, not on the medium
		Online:     a.up.Connected, Wake: a.deliver.Wake, Record: a.events.Record, Logger: log.With("component", "writer"),
	})
	a.newPageData()
	for _, d := range a.devices {
		d.poller = telemetry.NewPoller(telemetry.PollerOptions{
			Device: d.drv, Interval: d.cfg.PollInterval.D(), Clock: a.clock,
			Out: a.writer.Submit, Observe: a.observe, Record: a.events.Record, Logger: log,
			Cause: func(err error) string {
				c, _ := diag.DeviceCause(err, d.cfg.Transport, d.cfg.Address, d.cfg.UnitID)
				return c
			},
			Identified: func() {
				id := d.drv.Identity()
				log.Info("device identified", "device", d.cfg.Name, "manufacturer", id.Manufacturer, "model", id.Model, "serial", id.Serial)
				a.up.SetBirth(a.birth())
			},
		})
	}
	keys, err := uplink.SetpointKeys(cfg.Uplink.SetpointKeys)
	if err != nil {
		return nil, fmt.Errorf("uplink.setpoint_keys: %w", err)
	}
	required := a.keysRequired(cfg.Uplink, len(keys))
	a.keys = keyState{trusted: slices.Sorted(maps.Keys(keys)), revoked: slices.Clone(cfg.Uplink.RevokedKeys), closed: required && len(keys) == 0}
	a.up.RequireKeys(required)
	// Every setpoint message, including those a broker delivers late after a
	// reconnect, is parsed and checked by uplink, then validated and
	// clamped by the controller, and acked with the outcome.
	a.up.HandleSetpoints(keys, cfg.Uplink.RevokedKeys, func(sp hearth.Setpoint, received time.Time) hearth.Ack {
		return a.ctl.Submit(sp, clocks.At(received))
	})
	return a, nil
}

// openDevices opens one bus per physical link, shared by every device on
// it: the link keeps the largest gap any of its devices asks for, and each
// device keeps its own timeout and retries.
func (a *Agent) openDevices() error {
	buses := map[string]*drivers.Bus{}
	gaps := map[string]time.Duration{}
	for _, dc := range a.cfg.Devices {
		gaps[dc.LinkKey()] = max(gaps[dc.LinkKey()], dc.InterRequestGap.D())
	}
	for _, dc := range a.cfg.Devices {
		bus, ok := buses[dc.LinkKey()]
		if !ok {
			lc := dc.Link()
			lc.Gap, lc.Logger = gaps[dc.LinkKey()], a.log.With("link", dc.Address)
			var err error
			if bus, err = drivers.OpenBus(lc); err != nil {
				return fmt.Errorf("device %s: %w", dc.Name, err)
			}
			buses[dc.LinkKey()] = bus
			a.buses = append(a.buses, bus)
		}
		bus.ConfigureUnit(uint8(dc.UnitID), drivers.UnitConfig{Timeout: dc.Timeout.D(), Retries: dc.Retries})
		p := dc.RegisterMap()
		if p == nil {
			// A config built in code rather than parsed: built-in profiles only.
			var err error
			if p, err = drivers.EmbeddedProfile(cmpOr(dc.Profile, "sunspec")); err != nil {
				return fmt.Errorf("device %s: %w", dc.Name, err)
			}
		}
		d := &device{cfg: dc, bus: bus, profile: p.Name, window: p.StorageControl == drivers.StorageControlWindow, m124: p.Model124Writes()}
		if p.Discovery == "sunspec" {
			d.sunspec = drivers.NewSunSpecDevice(dc.Name, bus, uint8(dc.UnitID), drivers.WithProfile(p),
				drivers.WithHoleStore(holeStore{st: a.leases, log: a.log.With("component", "drivers")}))
			d.drv = d.sunspec
		} else {
			d.drv = drivers.NewProfileDevice(dc.Name, bus, uint8(dc.UnitID), p)
			if c := p.Control; c != nil && dc.Name != a.cfg.Safety.MeterDevice && (c.Guarded() || dc.AllowUnguardedControl) {
				d.vendor = drivers.NewVendorDevice(dc.Name, bus, uint8(dc.UnitID), p, nil)
			}
		}
		a.devices = append(a.devices, d)
	}
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// storageDevice is a SunSpec device's storage controls (model 124) as the
// controller takes them.
type storageDevice struct{ *drivers.Storage }

func (d storageDevice) Apply(ctx context.Context, a safety.Approved) (control.Readback, error) {
	st, err := d.Storage.Apply(ctx, a)
	rb := control.Readback{Detail: st}
	if err == nil || errors.Is(err, hearth.ErrNotEffective) {
		held := hearth.Watts(st.HeldW)
		rb.HeldW = &held
	}
	return rb, err
}

// vendorDevice is a device commanded through its profile's control
// section, as the controller takes it.
type vendorDevice struct{ *drivers.VendorDevice }

// The controller counts an unreachable vendor device at its last command
// for as long as the profile says it may run it (timeout.lapses_within).
var _ control.HoldBound = vendorDevice{}

func (d vendorDevice) Apply(ctx context.Context, a safety.Approved) (control.Readback, error) {
	st, err := d.VendorDevice.Apply(ctx, a)
	rb := control.Readback{Detail: st}
	if a.Mode() == hearth.ModePower && (err == nil || errors.Is(err, hearth.ErrNotEffective)) {
		held := hearth.Watts(st.HeldW)
		rb.HeldW = &held
	}
	return rb, err
}

// controlled reports whether the controller commands the device: a
// SunSpec device (model 124) or one whose profile has a control section
// hearth may use, but never the site meter.
func (a *Agent) controlled(d *device) bool {
	return d.cfg.Name != a.cfg.Safety.MeterDevice && (d.sunspec != nil || d.vendor != nil)
}

// newControl builds the controller for every controlled device: SunSpec
// storage controls (model 124), or a profile's control section. Devices
// without either are only read.
func (a *Agent) newControl() error {
	a.buildTime, a.buildFrom = hw.BuildStamp()
	if a.buildFrom == hw.BuildFromBinary && a.clockSynced() && a.buildTime.Sub(a.clocks.Wall()) > 24*time.Hour {
		// A file copied on a machine whose clock ran ahead: taken for a
		// floor, it would expire every lease until then.
		a.log.Warn("the binary's file time is ahead of the synchronised clock: not taken for its build time", "file_time", a.buildTime)
		a.buildTime, a.buildFrom = time.Time{}, hw.BuildFromNone
	}
	if a.buildFrom == hw.BuildFromNone {
		a.log.Warn("this binary carries no build time (no stamp, no vcs.time, no usable file time): with the clock unsynchronised, nothing bounds how old a lease is; such a lease is held at most " + safety.UnverifiedHold.String())
	}
	var devs []control.Device
	lim := a.cfg.Safety.Limits()
	for _, d := range a.devices {
		switch {
		case !a.controlled(d):
		case d.sunspec != nil:
			opts := []drivers.StorageOption{drivers.WriteBudget(d.m124, nil)}
			if d.window {
				opts = append(opts, drivers.PowerWindow())
			}
			devs = append(devs, storageDevice{drivers.NewStorage(d.sunspec, a.cfg.Safety.RevertTimeout.D(), opts...)})
		default:
			devs = append(devs, vendorDevice{d.vendor})
			if !d.vendor.Guarded() {
				// Nothing lapses on the device: what it may hold if the
				// agent dies is bounded by what it is commanded.
				if lim.UnguardedMaxW == nil {
					lim.UnguardedMaxW = map[string]hearth.Watts{}
				}
				lim.UnguardedMaxW[d.cfg.Name] = hearth.Watts(d.cfg.UnguardedCapW())
			}
		}
	}
	ctl, err := control.New(control.Options{
		Limits: lim, Store: a.leases, Devices: devs,
		MeterDevice: a.cfg.Safety.MeterDevice, MeterPoint: a.cfg.Safety.MeterPoint,
		EffectiveWithin: a.cfg.Safety.EffectiveWithin.D(),
		Now:             a.clocks.Now, Synced: a.clockSynced, BuildTime: a.buildTime, Event: a.events.Record,
		Revoked: a.cfg.Uplink.RevokedKeys,
		Logger:  a.log.With("component", "control"),
	})
	a.ctl = ctl
	return err
}

// UseLogRing makes the diagnostics API serve the log lines r keeps; r
// should be written by the logger the agent was given.
func (a *Agent) UseLogRing(r *diag.LogRing) { a.logs = r }

// UseLogLevel makes lv the level the diagnostics API reads and changes; it
// should be the level of the logger the agent was given.
func (a *Agent) UseLogLevel(lv *slog.LevelVar) { a.logLevel = lv }

// clockSynced says whether readings and leases can trust the wall clock.
func (a *Agent) clockSynced() bool { return a.clocks.Synced(a.cfg.AssumeClockSynced) }

// Run starts every part, consumers before producers, tells systemd the
// agent is ready once its loops run, and runs until ctx is cancelled. Then
// it stops the parts in reverse: it hands the devices back, flushes what it
// has to disk, makes one short last delivery attempt, publishes the
// offline status and returns, all within about five seconds.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("hearth starting", "version", hearth.Version, "gateway", a.cfg.GatewayID, "boot", a.clock.Boot, "devices", len(a.devices))
	upCtx, upCancel := context.WithCancel(context.Background())
	defer upCancel()
	a.up.Start(upCtx)
	// Diagnostics are for people; a failure to serve them never stops
	// the agent from keeping the battery safe.
	srv, err := diag.Start(diag.ServerOptions{Socket: a.cfg.DiagSocket, Group: a.cfg.DiagGroup, Agent: a,
		LogLevel: a.logLevel, Logger: a.log, Logs: a.logs})
	if err != nil {
		a.log.Error("diagnostics API unavailable", "err", err)
	}
	page := a.startPage()
	var metrics *diag.Metrics
	if a.cfg.MetricsListen != "" && a.cfg.MetricsListen != a.cfg.HTTPListen {
		if metrics, err = diag.StartMetrics(a.cfg.MetricsListen, a.metricsSource(), a.log); err != nil {
			a.log.Error("metrics unavailable", "err", err)
		}
	}
	a.conn.Start()
	a.ctl.Start()
	estop := a.startHardware()
	a.state.Start()
	a.deliver.Start()
	a.writer.Start()
	for _, d := range a.devices {
		d.poller.Start()
	}
	notify, feeder := a.startWatchdogs()

	<-ctx.Done()
	a.log.Info("hearth stopping")
	deadline := time.Now().Add(shutdownGrace)
	feeder.Close()
	if err := notify.Notify("STOPPING=1"); err != nil {
		a.log.Warn("systemd notify", "err", err)
	}
	for _, d := range a.devices {
		d.poller.Close()
	}
	estop.Close()
	a.ctl.Close() // devices handed back to their own logic
	// The last state (devices handed back) goes out before the session ends.
	a.state.Changed()
	a.state.Close(deadline.Add(-1500 * time.Millisecond))
	a.writer.Close() // commits what is left
	// One last chance for what was just committed, bounded by the grace.
	a.deliver.Close(deadline.Add(-time.Second))
	closeCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := a.up.Close(closeCtx); err != nil {
		a.log.Warn("uplink close", "err", err)
	}
	upCancel()
	a.conn.Close()
	if srv != nil {
		srv.Close()
	}
	if metrics != nil {
		metrics.Close()
	}
	if page != nil {
		page.Close()
	}
	a.closeAll()
	notify.Close()
	a.log.Info("hearth stopped")
	return nil
}

// startHardware drives the optional GPIO: the contactor and the status
// LED follow the safety state, and an e-stop input engages the stop. The
// control loop always runs: a pin that cannot be opened is logged, and a
// missing e-stop input counts as an engaged stop.
func (a *Agent) startHardware() *hw.EStop {
	g := a.cfg.GPIO
	out, err := hw.OpenOutputs(g.Contactor, g.StatusLED)
	if err != nil {
		a.log.Error("gpio outputs", "err", err)
	}
	if !out.None() {
		a.ctl.OnState(func(s hearth.State) {
			if err := out.Set(s.Safety == string(hearth.RuleEStop), s.Safety == "ok"); err != nil {
				a.log.Error("gpio outputs", "err", err)
			}
		})
	}
	if g.EStop == "" {
		return &hw.EStop{}
	}
	return hw.StartEStop(g.EStop, g.EStopActiveHigh, func(on bool) {
		a.log.Warn("emergency stop", "engaged", on)
		a.ctl.SetEStop(on)
	}, func(err error) { a.log.Error("e-stop input: holding the e-stop engaged", "err", err) })
}

// startWatchdogs tells systemd the agent is ready (its loops run) and
// feeds the hardware and systemd watchdogs while the poll and control
// loops are healthy. Either watchdog may be missing: a /dev/watchdog that
// cannot be opened (systemd may hold it) is logged and READY=1 still goes
// out, or a Type=notify unit would be killed at its start timeout.
func (a *Agent) startWatchdogs() (*hw.Notifier, *hw.Feeder) {
	notify, err := hw.OpenNotifier(os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		a.log.Error("systemd not notified", "err", err)
		notify, _ = hw.OpenNotifier("")
	}
	var wd *hw.Watchdog
	if a.cfg.WatchdogDevice != "" {
		if wd, err = hw.OpenWatchdog(a.cfg.WatchdogDevice); err != nil {
			a.log.Error("hardware watchdog not fed", "err", err)
		} else {
			a.closers = append(a.closers, wd.Close)
		}
	}
	if err := notify.Notify("READY=1"); err != nil {
		a.log.Error("systemd notify", "err", err)
	}
	feeder := hw.NewFeeder(wd, notify, time.Second, os.Getenv("WATCHDOG_USEC"), func() bool { return a.ctl.Healthy(a.stall()) })
	feeder.Start(func(err error) { a.log.Warn("watchdog", "err", err) })
	return notify, feeder
}

// stall is how long the poll or control loop may go without a beat before
// the watchdogs stop being fed: a few poll cycles, each allowed its
// requests' timeouts.
func (a *Agent) stall() time.Duration {
	s := 10 * time.Second
	for _, d := range a.devices {
		s = max(s, 3*(d.cfg.PollInterval.D()+8*d.cfg.Timeout.D()))
	}
	return s
}

// closeAll closes what New opened, last first.
func (a *Agent) closeAll() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			a.log.Error("close", "err", err)
		}
	}
	a.closers = nil
	for _, b := range a.buses {
		b.Close()
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.Error("close buffer", "err", err)
		}
	}
	a.dataDir.Release()
	a.runLocks.Release()
}
