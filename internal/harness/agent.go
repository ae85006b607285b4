package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// AgentOptions says how StartAgent runs `hearth run`.
type AgentOptions struct {
	// Config is the agent's config file, passed as --config.
	Config string
	// Args follow the config flag, e.g. "--log-level", "debug".
	Args []string
	// Env is added to the test's own environment, e.g.
	// "HEARTH_CLOCK_OFFSET_FILE=/tmp/x".
	Env []string
	// LogFile, when set, receives the agent's output (appended) instead
	// of a buffer in memory; Log reads it back.
	LogFile string
	// Name names the agent in errors and in the log printed when the test
	// failed; "agent" if empty.
	Name string
	// LogTail limits the log printed when the test failed to its last
	// lines; 0 prints all of it.
	LogTail int
	// SampleRSS, when positive, reads the process's VmRSS this often;
	// PeakRSS returns the highest value seen over all starts.
	SampleRSS time.Duration
}

// Agent is a `hearth run` child process owned by one test. It can be
// stopped, killed and started again; its output of every start goes to
// one log. Whatever runs when the test ends is killed, and the log is
// printed if the test failed.
type Agent struct {
	tb   testing.TB
	bin  string
	opts AgentOptions
	out  SyncBuffer // the output, when opts.LogFile is empty

	mu      sync.Mutex
	cur     *agentRun
	stopped bool // Stop or Kill has ended cur
	starts  int
	peakRSS int64 // kB
}

// agentRun is one start of the agent process.
type agentRun struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // what cmd.Wait returned; read only once exited is closed
}

// StartAgent runs `bin run --config opts.Config opts.Args...` and returns
// at once, without waiting for the agent to be ready. The test fails at
// once if the process cannot be started.
func StartAgent(tb testing.TB, bin string, opts AgentOptions) *Agent {
	tb.Helper()
	if opts.Name == "" {
		opts.Name = "agent"
	}
	a := &Agent{tb: tb, bin: bin, opts: opts}
	if err := a.start(); err != nil {
		tb.Fatalf("start %s: %v", opts.Name, err)
	}
	tb.Cleanup(func() {
		a.Kill()
		if !tb.Failed() {
			return
		}
		if n := opts.LogTail; n > 0 {
			tb.Logf("%s log (last %d lines):\n%s", opts.Name, n, lastLines(a.Log(), n, "\n"))
		} else {
			tb.Logf("%s log:\n%s", opts.Name, a.Log())
		}
	})
	return a
}

func (a *Agent) start() error {
	cmd := exec.Command(a.bin, append([]string{"run", "--config", a.opts.Config}, a.opts.Args...)...)
	cmd.Env = append(os.Environ(), a.opts.Env...)
	var logf *os.File
	if a.opts.LogFile != "" {
		f, err := os.OpenFile(a.opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		cmd.Stdout, cmd.Stderr = &a.out, &a.out
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return err
	}
	r := &agentRun{cmd: cmd, exited: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		close(r.exited)
	}()
	a.mu.Lock()
	a.cur, a.stopped = r, false
	a.starts++
	a.mu.Unlock()
	if a.opts.SampleRSS > 0 {
		go a.sampleRSS(cmd.Process.Pid, r.exited)
	}
	return nil
}

// Restart starts the agent again with the same options, once the last
// process has exited (Stop, Kill, or by itself). Restarting a running
// agent fails the test. Call it from the test goroutine.
func (a *Agent) Restart() {
	a.tb.Helper()
	select {
	case <-a.Exited():
	default:
		a.tb.Fatalf("%s: Restart while running", a.opts.Name)
	}
	if err := a.start(); err != nil {
		a.tb.Fatalf("restart %s: %v", a.opts.Name, err)
	}
}

func (a *Agent) run() *agentRun {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// take marks the current process as ended by the test and returns it, or
// nil if Stop or Kill has already ended it.
func (a *Agent) take() *agentRun {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return nil
	}
	a.stopped = true
	return a.cur
}

// Pid returns the process id of the current (or last) process.
func (a *Agent) Pid() int { return a.run().cmd.Process.Pid }

// Exited is closed when the current process has exited and been waited for.
func (a *Agent) Exited() <-chan struct{} { return a.run().exited }

// Wait waits for the current process to exit and returns what
// exec.Cmd.Wait returned: nil for exit status 0.
func (a *Agent) Wait() error {
	r := a.run()
	<-r.exited
	return r.err
}

// Stop sends SIGTERM and waits up to limit for the process to exit. It
// returns how long that took and the exit error as exec.Cmd.Wait returned
// it (nil for exit status 0); past limit, it kills the process and says
// so. Stopping an agent Stop or Kill already ended returns 0 and nil.
func (a *Agent) Stop(limit time.Duration) (time.Duration, error) {
	r := a.take()
	if r == nil {
		return 0, nil
	}
	start := time.Now()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
		return time.Since(start), r.err
	case <-time.After(limit):
		took := time.Since(start)
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.exited
		return took, fmt.Errorf("%s did not exit within %s of SIGTERM", a.opts.Name, limit)
	}
}

// Kill sends SIGKILL and waits for the process to exit; a no-op once Stop
// or Kill has ended it.
func (a *Agent) Kill() {
	r := a.take()
	if r == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
}

// Alive returns nil while the process runs; otherwise an error saying
// that the test ended it or that it exited by itself, and how.
func (a *Agent) Alive() error {
	a.mu.Lock()
	r, stopped := a.cur, a.stopped
	a.mu.Unlock()
	if stopped {
		return fmt.Errorf("%s is not running", a.opts.Name)
	}
	select {
	case <-r.exited:
		return fmt.Errorf("%s exited by itself: %s", a.opts.Name, r.cmd.ProcessState)
	default:
		return nil
	}
}

// Log returns everything the agent has written to stdout and stderr so
// far, over all starts.
func (a *Agent) Log() string {
	if a.opts.LogFile != "" {
		b, _ := os.ReadFile(a.opts.LogFile)
		return string(b)
	}
	return a.out.String()
}

// Starts returns how many times the process has been started.
func (a *Agent) Starts() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.starts
}

// PeakRSS returns the highest VmRSS sampled over all starts, in kB; 0 if
// none was (see AgentOptions.SampleRSS).
func (a *Agent) PeakRSS() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.peakRSS
}

func (a *Agent) sampleRSS(pid int, exited <-chan struct{}) {
	t := time.NewTicker(a.opts.SampleRSS)
	defer t.Stop()
	for {
		if kb, ok := ReadRSS(pid); ok {
			a.mu.Lock()
			a.peakRSS = max(a.peakRSS, kb)
			a.mu.Unlock()
		}
		select {
		case <-exited:
			return
		case <-t.C:
		}
	}
}

// ReadRSS returns the VmRSS of pid in kB, from /proc/PID/status.
func ReadRSS(pid int) (int64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, err := strconv.ParseInt(f[0], 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// SyncBuffer is a bytes.Buffer that a child process's output can be
// written to while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// BuildFlags are the go build flags the tests build hearth binaries with:
// they stamp the build time (hearth.BuildDate), as make build and make
// release stamp the commit time, so that the agent's floor under true
// time holds in tests as on a gateway.
func BuildFlags() []string {
	return []string{"-ldflags", "-X github.com/hearth-energy/hearth.BuildDate=" + time.Now().UTC().Format(time.RFC3339)}
}
