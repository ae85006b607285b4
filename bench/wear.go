package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/internal/harness"
	"github.com/hearth-energy/hearth/internal/powercut"
)

// wearCase is one way of running the agent while the power-cut file
// system counts what it writes.
type wearCase struct {
	name, how string
	offline   bool
	interval  string // buffer.commit_interval
	backlog   int    // readings left in the buffer before the start, past its quota
	maxBytes  string // buffer.max_bytes
	nofsync   bool   // the agent built without the buffer's fsyncs
}

// wearResult is what one case cost.
type wearResult struct {
	wearCase
	readings  float64 // taken in the window: devices × polls
	stats     powercut.Stats
	compacted float64 // readings compacted in the window
}

// perReading is the medium bytes per reading handled: taken in the window,
// or compacted in it (at the quota, what a reading costs over its life in
// the buffer includes its share of a compaction).
func (w wearResult) perReading() float64 {
	return float64(w.stats.Medium()) / (w.readings + w.compacted)
}

// wear runs the agent with its data_dir on the power-cut file system
// (internal/powercut), four simulated devices at 1 Hz, and counts, over a
// window after a warm-up, the bytes in write requests, the 4 KiB pages
// written back (at an fsync, or after 30 s dirty as the kernel's
// writeback would) and the fsyncs: live, offline at several
// buffer.commit_interval values, offline at the quota, and live without
// the fsyncs the buffer adds, for their cost.
func (r *run) wear(window time.Duration) {
	logf("wear: bytes written per reading on the power-cut file system, %s windows", window)
	nofsyncBin := filepath.Join(r.dir, "hearth-nofsync")
	if out, err := exec.Command("go", "build", "-trimpath", "-tags", "nofsync", "-o", nofsyncBin, "./cmd/hearth").CombinedOutput(); err != nil {
		panic(fmt.Sprintf("build hearth -tags nofsync: %v\n%s", err, out))
	}
	cases := []wearCase{
		{name: "live", how: "broker connected, default commit_interval"},
		{name: "live_nofsync", how: "broker connected, agent built without the buffer's fsyncs (-tags nofsync)", nofsync: true},
		{name: "outage_ci0", how: "broker unreachable, commit_interval 0 (a commit every poll cycle)", offline: true, interval: "0s"},
		{name: "outage_ci5s", how: "broker unreachable, commit_interval 5s (default)", offline: true, interval: "5s"},
		{name: "outage_ci30s", how: "broker unreachable, commit_interval 30s", offline: true, interval: "30s"},
		{name: "quota", how: "broker unreachable, buffer past 80% of max_bytes 4 MiB at start, compacting; commit_interval 5s",
			offline: true, interval: "5s", backlog: 16000, maxBytes: "4MiB"},
	}
	var res []wearResult
	var payload float64
	for _, c := range cases {
		win := window
		if !c.offline {
			// Live, the buffer's only regular write is the seq
			// reservation, once per 1,024 readings (256 s here): the
			// window holds at least one.
			win = max(window, 5*time.Minute)
		}
		w, p := r.wearRun(c, win, nofsyncBin)
		if p > 0 {
			payload = p
		}
		res = append(res, w)
		logf("wear %s: %.0f readings, %d B in writes, %d B to the medium, %d fsyncs, %d dir fsyncs: %.0f B/reading",
			c.name, w.readings, w.stats.WriteBytes, w.stats.Medium(), w.stats.Fsyncs, w.stats.DirFsyncs, w.perReading())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Wear: bytes written on the power-cut file system\n\n"+
		"The hearth binary with its data_dir on internal/powercut (a FUSE loopback over ext4 that sees every write and fsync), four simulators at 1 Hz, "+
		"Mosquitto behind a proxy that refuses for the outage cases. Over a %s window (live: at least 5 min, to hold a seq reservation) after a 10 s warm-up: bytes in write requests, bytes of the medium "+
		"(each 4 KiB page dirtied counted once when its file is fsynced or when it has been dirty 30 s, as the kernel's writeback would; pages still dirty at the "+
		"end counted too) and fsyncs. Readings: 4 × window/1 s taken. JSON payload of a reading on the wire: %.0f B.\n\n", window, payload)
	b.WriteString("Medium B / reading is over the readings taken plus those compacted in the window (at the quota a reading's share of its compaction is part of what it costs).\n\n")
	b.WriteString("| case | how | write requests B | medium B | medium B / reading | × payload | fsyncs | dir fsyncs | readings compacted |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range res {
		x := "—"
		if payload > 0 {
			x = fmt.Sprintf("%.2f×", w.perReading()/payload)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | **%.0f** | %s | %d | %d | %.0f |\n", w.name, w.how, w.stats.WriteBytes, w.stats.Medium(), w.perReading(), x, w.stats.Fsyncs, w.stats.DirFsyncs, w.compacted)
		r.results["wear_bytes_per_reading_"+w.name] = round(w.perReading(), 0)
		r.notes["wear_bytes_per_reading_"+w.name] = "power-cut file system, medium bytes / readings taken: " + w.how
	}
	live := res[0]
	r.results["bytes_written_per_hour"] = round(float64(live.stats.Medium())/(live.readings/4/3600), 0)
	r.notes["bytes_written_per_hour"] = "medium bytes of the agent's data_dir on the power-cut file system (4 KiB pages written back at fsync or after 30 s) over a live window, 4 devices at 1 Hz, scaled to an hour"
	fsyncs := res[0].stats.Fsyncs - res[1].stats.Fsyncs
	fmt.Fprintf(&b, "\nThe buffer's own fsyncs (the seq reservation, once per 1,024 readings; the lease state, once per accepted lease) cost %d fsyncs and %d medium bytes "+
		"over the live window (live − live_nofsync); SQLite's checkpoints sync the WAL either way.\n", fsyncs, res[0].stats.Medium()-res[1].stats.Medium())
	r.sections = append(r.sections, b.String())
}

// wearRun runs one case and returns what it cost and the mean JSON size
// of the readings received live (0 offline).
func (r *run) wearRun(c wearCase, window time.Duration, nofsyncBin string) (wearResult, float64) {
	fsys := powercut.MountTemp(r.tb)
	mnt, root := fsys.Dir(), r.tb.TempDir()
	if c.backlog > 0 {
		// Left by a long outage, before the count starts.
		wearBacklog(filepath.Join(mnt, "hearth.db"), c.backlog)
	}
	mq := harness.StartMosquitto(r.tb)
	px := harness.StartProxy(r.tb, mq.Addr())
	px.Refuse(c.offline)
	_, addrs := r.sims(4)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	var extra strings.Builder
	if c.interval != "" || c.maxBytes != "" {
		extra.WriteString("buffer:\n")
		if c.interval != "" {
			fmt.Fprintf(&extra, "  commit_interval: %s\n", c.interval)
		}
		if c.maxBytes != "" {
			fmt.Fprintf(&extra, "  max_bytes: %s\n", c.maxBytes)
		}
	}
	bin := r.hearth
	if c.nofsync {
		bin = nofsyncBin
	}
	var mu sync.Mutex
	var size, n int
	rec := paho.NewClient(paho.NewClientOptions().AddBroker(mq.URL()).SetClientID("bench-wear").SetProtocolVersion(4))
	if tok := rec.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		panic("connect recorder")
	}
	defer rec.Disconnect(100)
	rec.Subscribe("hearth/v1/gw-wear/telemetry", 1, func(_ paho.Client, m paho.Message) {
		var b struct{ Readings []json.RawMessage }
		if json.Unmarshal(m.Payload(), &b) != nil {
			return
		}
		mu.Lock()
		for _, x := range b.Readings {
			size += len(x)
			n++
		}
		mu.Unlock()
	})
	start := wearStats(r.tb, fsys)
	a := r.startAgentWith(bin, "gw-wear", root, mnt, px.URL(), addrs, "1s", pub, extra.String())
	if c.backlog == 0 {
		time.Sleep(10 * time.Second)
		start = wearStats(r.tb, fsys)
	}
	c0 := 0.0 // with a backlog the count starts before the agent does
	if c.backlog == 0 {
		c0 = diagFloat(root, "readings_compacted")
	}
	time.Sleep(window)
	end := wearStats(r.tb, fsys)
	c1 := diagFloat(root, "readings_compacted")
	a.Kill() // the count ends here; a clean stop would flush what is in memory
	d := powercut.Stats{WriteBytes: end.WriteBytes - start.WriteBytes, Fsyncs: end.Fsyncs - start.Fsyncs,
		DirFsyncs: end.DirFsyncs - start.DirFsyncs, FlushedBytes: end.FlushedBytes - start.FlushedBytes, DirtyBytes: end.DirtyBytes - start.DirtyBytes}
	w := wearResult{wearCase: c, readings: 4 * window.Seconds(), stats: d, compacted: c1 - c0}
	mu.Lock()
	defer mu.Unlock()
	if n == 0 {
		return w, 0
	}
	return w, float64(size) / float64(n)
}

func diagFloat(dir, key string) float64 {
	v, _ := diag(dir, "buffer")[key].(float64)
	return v
}

// wearBacklog leaves n readings of four devices, a second apart and more
// than an hour old, in a buffer at path, as a long outage would.
func wearBacklog(path string, n int) {
	st, err := buffer.Open(path, buffer.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	start := time.Now().Add(-2 * time.Hour).UTC()
	var batch []hearth.Reading
	for i := range n {
		batch = append(batch, hearth.Reading{Device: fmt.Sprintf("dev%d", i%4), Time: start.Add(time.Duration(i/4) * time.Second),
			Clock: hearth.ClockSynced, Boot: "0ldb00t0", MonoMS: int64(i/4) * 1000,
			Points: map[string]hearth.Point{"soc_pct": hearth.V(72.5), "power_w": hearth.V(-1500 + float64(i%100)),
				"cell_v_max": hearth.V(3.412), "temp_c": hearth.V(24.5), "ac_hz": hearth.V(50.01), "ac_power_w": hearth.V(-1480),
				"soh_pct": hearth.Q(hearth.QualityNotImplemented)}})
		if len(batch) == 1000 {
			if _, err := st.Append(batch); err != nil {
				panic(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := st.Append(batch); err != nil {
		panic(err)
	}
}

// wearStats returns the power-cut file system's counters.
func wearStats(tb *shim, fsys *powercut.FS) powercut.Stats {
	st, err := fsys.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
