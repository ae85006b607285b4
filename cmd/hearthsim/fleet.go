package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hearth-energy/hearth/agent"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/uplink"
)

// cmdFleet runs N simulated gateways in this process, each a full agent
// (agent.New/Run) with its own simulated device on a loopback port, its
// own SQLite file and its own MQTT session, against one broker; it
// reports connect times, message rates, memory, and after a broker
// restart the reconnect spread and whether any seq was lost.
func cmdFleet(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hearthsim fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("gateways", 100, "number of gateways")
	brokerURL := fs.String("broker", "", "broker URL (tcp://host:port); empty starts a private mosquitto")
	duration := fs.Duration("duration", time.Minute, "how long to run after every gateway has started")
	restartAfter := fs.Duration("restart-broker-after", 0, "restart the private mosquitto this long after the start (0: never)")
	bootDelay := fs.Duration("boot-delay", 30*time.Second, "each gateway's uplink.boot_delay: the jitter window for connects")
	asJSON := fs.Bool("json", false, "print the summary as one JSON line as well")
	if code, ok := parse(fs, args, true, stdout, stderr); !ok {
		return code
	}
	if *n < 1 {
		fmt.Fprintln(stderr, "hearthsim fleet: --gateways must be at least 1")
		return 2
	}
	dir, err := os.MkdirTemp("", "hearth-fleet-")
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim fleet:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	var mq *mosquitto
	if *brokerURL == "" {
		mq, err = startMosquitto(dir)
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim fleet:", err)
			return 1
		}
		defer mq.stop(syscall.SIGKILL)
		*brokerURL = "tcp://" + mq.addr
		fmt.Fprintf(stdout, "mosquitto on %s\n", mq.addr)
	} else if *restartAfter > 0 {
		fmt.Fprintln(stderr, "hearthsim fleet: --restart-broker-after needs the private mosquitto (no --broker)")
		return 2
	}

	obs, err := newFleetObserver(*brokerURL)
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim fleet:", err)
		return 1
	}
	defer obs.close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	log := slog.New(slog.DiscardHandler)
	started := 0
	for i := range *n {
		id := fmt.Sprintf("fleet-%04d", i)
		a, err := newFleetGateway(runCtx, &wg, dir, id, *brokerURL, *bootDelay, log)
		if err != nil {
			fmt.Fprintf(stderr, "hearthsim fleet: gateway %s: %v\n", id, err)
			break
		}
		wg.Go(func() { a.Run(runCtx) })
		started++
	}
	fmt.Fprintf(stdout, "%d gateways started in %s\n", started, time.Since(start).Round(time.Millisecond))

	rep := fleetReport{Gateways: *n, Started: started, BootDelay: bootDelay.String()}
	end := start.Add(*duration)
	var restartAt time.Time
	if mq != nil && *restartAfter > 0 {
		restartAt = start.Add(*restartAfter)
		end = restartAt.Add(max(*duration-*restartAfter, *bootDelay+30*time.Second))
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	restarted := false
	var peakRSS float64
	for time.Now().Before(end) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		peakRSS = max(peakRSS, rssMB())
		c, msgs := obs.counts()
		fmt.Fprintf(stdout, "%5.0fs  online %d/%d  telemetry messages %d\n", time.Since(start).Seconds(), c, started, msgs)
		if !restarted && !restartAt.IsZero() && time.Now().After(restartAt) {
			restarted = true
			rep.steadyRates(obs, start)
			fmt.Fprintln(stdout, "restarting mosquitto")
			obs.markRestart()
			if err := mq.restart(); err != nil {
				fmt.Fprintln(stderr, "hearthsim fleet: restart broker:", err)
				return 1
			}
			if err := obs.reconnect(); err != nil {
				fmt.Fprintln(stderr, "hearthsim fleet: observer reconnect:", err)
			}
		}
	}
	if !restarted {
		rep.steadyRates(obs, start)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rep.RSSMB = round1(rssMB())
	rep.PeakRSSMB = round1(max(peakRSS, rep.RSSMB))
	rep.HeapMB = round1(float64(ms.HeapAlloc) / (1 << 20))
	rep.Goroutines = runtime.NumGoroutine()
	obs.summarise(&rep, start, *bootDelay)
	cancel()
	wg.Wait()
	obs.seqCheck(&rep)
	rep.print(stdout)
	if *asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(stdout, string(b))
	}
	if rep.Connected < started {
		return 1
	}
	return 0
}

func newFleetGateway(ctx context.Context, wg *sync.WaitGroup, dir, id, broker string, bootDelay time.Duration, log *slog.Logger) (*agent.Agent, error) {
	s := sim.New(sim.Config{InitialSoC: 60, Serial: id})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	wg.Go(func() { s.ServeTCP(ctx, ln) })
	gdir := filepath.Join(dir, id)
	cfgText := fmt.Sprintf(`gateway_id: %[1]s
data_dir: %[2]s
diag_socket: %[2]s/hearth.sock
assume_clock_synced: true
devices:
  - name: battery
    address: %[3]s
    poll_interval: 1s
uplink:
  broker: %[4]s
  boot_delay: %[5]s
`, id, gdir, ln.Addr(), broker, bootDelay)
	cfg, err := config.Parse(id+".yaml", []byte(cfgText))
	if err != nil {
		return nil, err
	}
	return agent.New(cfg, log)
}

// mosquitto is a private broker the fleet can restart.
type mosquitto struct {
	bin, conf, addr, dir string
	cmd                  *exec.Cmd
	done                 chan struct{}
}

func startMosquitto(dir string) (*mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, err := os.Stat(bin); err != nil {
			return nil, errors.New("mosquitto not found: apt-get install mosquitto")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	m := &mosquitto{bin: bin, addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence true\npersistence_location %s/\nmax_queued_messages 100000\nlog_dest none\n", port, dir)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return m, m.start()
}

func (m *mosquitto) start() error {
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	if err := m.cmd.Start(); err != nil {
		return err
	}
	m.done = make(chan struct{})
	done := m.done
	cmd := m.cmd
	go func() { cmd.Wait(); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", m.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
	}
	return errors.New("mosquitto did not start")
}

func (m *mosquitto) stop(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(sig)
	<-m.done
	m.cmd = nil
}

// restart stops the broker with SIGTERM, so that it saves its sessions
// (the observer's queued messages among them), and starts it again.
func (m *mosquitto) restart() error {
	m.stop(syscall.SIGTERM)
	return m.start()
}

// fleetObserver subscribes to every gateway's status and telemetry.
type fleetObserver struct {
	url    string
	client paho.Client

	mu        sync.Mutex
	online    map[string]time.Time // first online status
	reonline  map[string]time.Time // first online status after the restart
	restartAt time.Time            // zero until the restart
	seqs      map[string]map[uint64]bool
	gaps      map[string][][2]uint64 // gap events by gateway
	msgs      int
	readings  int
}

func newFleetObserver(url string) (*fleetObserver, error) {
	o := &fleetObserver{url: url, online: map[string]time.Time{}, reonline: map[string]time.Time{},
		seqs: map[string]map[uint64]bool{}, gaps: map[string][][2]uint64{}}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID("hearthsim-fleet-observer").
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false).SetOrderMatters(false)
	o.client = paho.NewClient(opts)
	return o, o.reconnect()
}

func (o *fleetObserver) reconnect() error {
	var err error
	for range 50 {
		tok := o.client.Connect()
		if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			break
		}
		err = tok.Error()
		time.Sleep(100 * time.Millisecond)
	}
	if !o.client.IsConnected() {
		return fmt.Errorf("connect observer: %v", err)
	}
	tok := o.client.SubscribeMultiple(map[string]byte{"hearth/v1/+/status": 1, "hearth/v1/+/telemetry": 1,
		"hearth/v1/+/telemetry/backfill": 1, "hearth/v1/+/event": 1}, o.receive)
	tok.WaitTimeout(10 * time.Second)
	return tok.Error()
}

func (o *fleetObserver) close() { o.client.Disconnect(100) }

func (o *fleetObserver) markRestart() {
	o.mu.Lock()
	o.restartAt = time.Now()
	o.mu.Unlock()
}

func (o *fleetObserver) receive(_ paho.Client, m paho.Message) {
	parts := strings.Split(m.Topic(), "/")
	if len(parts) < 4 {
		return
	}
	gw, kind := parts[2], strings.Join(parts[3:], "/")
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch kind {
	case "status":
		if m.Retained() || !strings.Contains(string(m.Payload()), `"online"`) {
			return
		}
		if _, ok := o.online[gw]; !ok {
			o.online[gw] = now
		} else if !o.restartAt.IsZero() {
			if _, ok := o.reonline[gw]; !ok {
				o.reonline[gw] = now
			}
		}
	case "telemetry", "telemetry/backfill":
		b, err := uplink.DecodeTelemetry(m.Payload())
		if err != nil {
			return
		}
		o.msgs++
		o.readings += len(b.Readings)
		s := o.seqs[gw]
		if s == nil {
			s = map[uint64]bool{}
			o.seqs[gw] = s
		}
		for _, r := range b.Readings {
			s[r.Seq] = true
		}
		for _, a := range b.Aggregates {
			for q := a.SeqFrom; q <= a.SeqTo; q++ {
				s[q] = true
			}
		}
	case "event":
		var ev struct {
			Type string `json:"type"`
			From uint64 `json:"from_seq"`
			To   uint64 `json:"to_seq"`
		}
		if json.Unmarshal(m.Payload(), &ev) == nil && ev.Type == "gap" {
			o.gaps[gw] = append(o.gaps[gw], [2]uint64{ev.From, ev.To})
		}
	}
}

func (o *fleetObserver) counts() (online, msgs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.online), o.msgs
}

// fleetReport is what `hearthsim fleet` prints.
type fleetReport struct {
	Gateways   int     `json:"gateways"`
	Started    int     `json:"started"`
	Connected  int     `json:"connected"`
	BootDelay  string  `json:"boot_delay"`
	ConnectP50 float64 `json:"connect_p50_s"`
	ConnectMax float64 `json:"connect_max_s"`
	// Rates over the steady window before any restart.
	MsgsPerS     float64 `json:"telemetry_msgs_per_s"`
	ReadingsPerS float64 `json:"readings_per_s"`
	RSSMB        float64 `json:"rss_mb"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	HeapMB       float64 `json:"go_heap_mb"`
	Goroutines   int     `json:"goroutines"`
	// After the broker restart.
	Reconnected      int      `json:"reconnected,omitempty"`
	ReconnectHist    []int    `json:"reconnect_histogram,omitempty"` // gateways per tenth of the jitter window
	ReconnectBuckets []string `json:"reconnect_buckets,omitempty"`
	// Seq contiguity per gateway, after the run.
	SeqsReceived    int `json:"seqs_received"`
	GatewaysWithGap int `json:"gateways_with_missing_seqs"`
	SeqsMissing     int `json:"seqs_missing"`
	SeqsInGapEvents int `json:"seqs_in_gap_events"`
}

func (r *fleetReport) steadyRates(o *fleetObserver, start time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	el := time.Since(start).Seconds()
	r.MsgsPerS = round1(float64(o.msgs) / el)
	r.ReadingsPerS = round1(float64(o.readings) / el)
}

func (o *fleetObserver) summarise(r *fleetReport, start time.Time, window time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r.Connected = len(o.online)
	var ts []float64
	for _, t := range o.online {
		ts = append(ts, t.Sub(start).Seconds())
	}
	sort.Float64s(ts)
	if len(ts) > 0 {
		r.ConnectP50 = round1(ts[len(ts)/2])
		r.ConnectMax = round1(ts[len(ts)-1])
	}
	if o.restartAt.IsZero() {
		return
	}
	r.Reconnected = len(o.reonline)
	const buckets = 10
	width := window / buckets
	if width <= 0 {
		width = time.Second
	}
	hist := make([]int, buckets+1)
	for _, t := range o.reonline {
		i := min(int(t.Sub(o.restartAt)/width), buckets)
		hist[i]++
	}
	r.ReconnectHist = hist
	for i := range buckets {
		r.ReconnectBuckets = append(r.ReconnectBuckets, fmt.Sprintf("%s-%s", time.Duration(i)*width, time.Duration(i+1)*width))
	}
	r.ReconnectBuckets = append(r.ReconnectBuckets, fmt.Sprintf(">%s", window))
}

// seqCheck counts, per gateway, the seqs below its highest one that
// neither arrived nor were named by a gap event.
func (o *fleetObserver) seqCheck(r *fleetReport) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for gw, s := range o.seqs {
		var hi uint64
		for q := range s {
			hi = max(hi, q)
		}
		r.SeqsReceived += len(s)
		missing := 0
		for q := uint64(1); q <= hi; q++ {
			if s[q] {
				continue
			}
			gapped := false
			for _, g := range o.gaps[gw] {
				if q >= g[0] && q <= g[1] {
					gapped = true
					break
				}
			}
			if gapped {
				r.SeqsInGapEvents++
			} else {
				missing++
			}
		}
		if missing > 0 {
			r.GatewaysWithGap++
			r.SeqsMissing += missing
		}
	}
}

func (r *fleetReport) print(w io.Writer) {
	fmt.Fprintf(w, "gateways      %d started, %d connected (boot_delay %s): connect p50 %.1fs, last %.1fs\n", r.Started, r.Connected, r.BootDelay, r.ConnectP50, r.ConnectMax)
	fmt.Fprintf(w, "telemetry     %.1f messages/s, %.1f readings/s\n", r.MsgsPerS, r.ReadingsPerS)
	fmt.Fprintf(w, "memory        RSS %.1f MB (peak %.1f MB), Go heap %.1f MB, %d goroutines\n", r.RSSMB, r.PeakRSSMB, r.HeapMB, r.Goroutines)
	if r.ReconnectHist != nil {
		fmt.Fprintf(w, "reconnects    %d of %d after the broker restart:\n", r.Reconnected, r.Connected)
		for i, n := range r.ReconnectHist {
			fmt.Fprintf(w, "  %-12s %5d %s\n", r.ReconnectBuckets[i], n, strings.Repeat("#", min(n, 60)))
		}
	}
	fmt.Fprintf(w, "seqs          %d received; %d missing on %d gateways; %d reported in gap events\n", r.SeqsReceived, r.SeqsMissing, r.GatewaysWithGap, r.SeqsInGapEvents)
}

func rssMB() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseFloat(f[0], 64)
				return v / 1024
			}
		}
	}
	return 0
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
