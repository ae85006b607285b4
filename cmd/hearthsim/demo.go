package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/broker"
	"github.com/hearth-energy/hearth/internal/cloud"
	"github.com/hearth-energy/hearth/uplink"
)

//go:embed demo.yaml.tmpl
var demoConfig string

// cmdDemo runs the whole path on one machine: the simulator and an embedded
// broker in this process, on free loopback ports, the agent as a child
// process, and a cloud-side view of its telemetry, until Ctrl-C.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hearthsim demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	agentPath := fs.String("agent", "", "path of the hearth binary (default: next to hearthsim, then $PATH)")
	keep := fs.Bool("keep", false, "keep the demo's data folder")
	if code, ok := parse(fs, args, true, stdout, stderr); !ok {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "hearthsim demo:", err)
		return 1
	}
	// A reader that goes away (`hearthsim demo | head -3`) ends the demo
	// like Ctrl-C, agent included: writes to the closed pipe fail instead
	// of killing this process with SIGPIPE and orphaning the agent.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	defer signal.Stop(sigpipe)
	ctx, stopDemo := context.WithCancel(ctx)
	defer stopDemo()
	stdout = &pipeWriter{w: stdout, broken: stopDemo}
	bin, err := findAgent(*agentPath)
	if err != nil {
		return fail(err)
	}
	dir, err := os.MkdirTemp("", "hearth-demo-")
	if err != nil {
		return fail(err)
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	b, err := broker.Start(ctx, "127.0.0.1:0", quiet)
	if err != nil {
		return fail(err)
	}
	defer b.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	// The local page, on a loopback port free a moment ago: the agent
	// takes it when it starts.
	httpAddr, err := freeLoopback()
	if err != nil {
		return fail(err)
	}
	s := sim.New(sim.Config{UnitID: 1, InitialSoC: 60, Serial: "DEMO0001", Logger: quiet})
	simCtx, simCancel := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		s.ServeTCP(simCtx, ln)
	}()
	defer func() { simCancel(); <-simDone }()

	cfgPath := filepath.Join(dir, "hearth.yaml")
	f, err := os.Create(cfgPath)
	if err != nil {
		return fail(err)
	}
	brokerURL := "tcp://" + b.Addr()
	// The demo plays the cloud too: it signs one lease with its own key.
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Close()
		return fail(err)
	}
	err = template.Must(template.New("demo").Parse(demoConfig)).Execute(f, map[string]string{
		"GatewayID": "demo-gw", "DataDir": dir, "Modbus": ln.Addr().String(), "Broker": brokerURL,
		"Key": base64.StdEncoding.EncodeToString(pub), "HTTP": httpAddr,
	})
	f.Close()
	if err != nil {
		return fail(err)
	}
	logPath := filepath.Join(dir, "hearth.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = stopWithParent() // should this process die anyway
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start agent: %w", err))
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	fmt.Fprintf(stdout, "hearth demo: simulator on %s, broker on %s, agent pid %d\n", ln.Addr(), brokerURL, cmd.Process.Pid)
	fmt.Fprintf(stdout, "config %s, agent log %s; Ctrl-C stops\n", cfgPath, logPath)
	fmt.Fprintf(stdout, "look at the agent from another terminal:\n")
	fmt.Fprintf(stdout, "  %s status --config %s\n", bin, cfgPath)
	fmt.Fprintf(stdout, "  %s points --config %s\n", bin, cfgPath)
	fmt.Fprintf(stdout, "  local page: http://%s/\n", httpAddr)
	fmt.Fprintf(stdout, "in 5 s the demo cloud sends a signed lease: discharge 4000 W for 1 min (the agent's limit is 2500 W)\n\n")
	watchCtx, watchCancel := context.WithCancel(ctx)
	defer watchCancel()
	watchErr := make(chan error, 1)
	go func() { watchErr <- demoView(watchCtx, brokerURL, "hearth/v1", "demo-gw", stdout) }()

	leaseDone := make(chan struct{})
	go func() {
		defer close(leaseDone)
		demoLease(watchCtx, brokerURL, key, stderr)
	}()
	defer func() { <-leaseDone }()

	code := 0
	select {
	case <-ctx.Done():
	case err := <-exited:
		fmt.Fprintf(stderr, "hearthsim demo: the agent exited (%v); its log:\n", err)
		if log, rerr := os.ReadFile(logPath); rerr == nil {
			stderr.Write(log)
		}
		return 1
	case err := <-watchErr:
		if err != nil {
			code = fail(err)
		}
	}
	watchCancel()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(6 * time.Second):
		cmd.Process.Kill()
		<-exited
		fmt.Fprintln(stderr, "hearthsim demo: the agent did not stop within 6 s and was killed")
		code = 1
	}
	fmt.Fprintln(stdout, "\ndemo stopped")
	return code
}

// demoLease waits a few seconds, then sends the agent a signed lease to
// discharge at 4 kW for a minute, so the demo shows the whole loop: the
// ack, the clamp to the agent's own limit, the battery following, and the
// fallback when the lease ends.
func demoLease(ctx context.Context, brokerURL string, key ed25519.PrivateKey, stderr io.Writer) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(5 * time.Second):
	}
	payload, err := buildLease("demo-gw", "demo-lease", 1, hearth.ModePower, 4000, time.Minute, hearth.ModeAuto)
	if err == nil {
		payload, err = uplink.SignSetpoint(payload, "demo-ops", key)
	}
	var c *cloud.Client
	if err == nil {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err = cloud.Dial(dctx, brokerURL, "hearthsim-demo-ops")
		cancel()
	}
	if err == nil {
		defer c.Close()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = c.Publish(pctx, "hearth/v1/demo-gw/setpoint", payload, false)
		cancel()
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(stderr, "hearthsim demo: sending the demo lease:", err)
	}
}

// pipeWriter passes writes on to w until one fails, as writes to a pipe
// whose reader has gone do; then it calls broken, once, and drops the
// rest.
type pipeWriter struct {
	w      io.Writer
	broken func()
	mu     sync.Mutex
	failed bool
}

func (p *pipeWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed {
		return 0, io.ErrClosedPipe
	}
	n, err := p.w.Write(b)
	if err != nil {
		p.failed = true
		p.broken()
	}
	return n, err
}

// freeLoopback returns a loopback address whose port was free a moment ago.
func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func findAgent(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "hearth")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("hearth")
	if err != nil {
		return "", fmt.Errorf("hearth binary not found next to hearthsim or on $PATH: build it with `make build` or pass --agent")
	}
	return p, nil
}
