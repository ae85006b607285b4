package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// process is a server the harness runs (mosquitto, nats-server): it logs
// to a file and is ready once its TCP address accepts connections.
type process struct {
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	addr string        // the address it was last started on
}

// start runs bin with args and waits until addr accepts, the process
// exits, or timeout passes; in the last two cases it says why, with the
// end of the log.
func (p *process) start(bin string, args []string, addr string, timeout time.Duration) error {
	return p.startEnv(bin, args, nil, addr, timeout)
}

// startEnv is start with env as the process's whole environment (nil: the
// test's own).
func (p *process) startEnv(bin string, args, env []string, addr string, timeout time.Duration) error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.addr = cmd, done, addr
	p.mu.Unlock()

	name := filepath.Base(bin)
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-done:
			p.mu.Lock()
			p.cmd = nil
			p.mu.Unlock()
			return fmt.Errorf("%s exited on %s: %s (log: %s)", name, addr, cmd.ProcessState, p.tailLog())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("%s on %s not accepting after %v: %v", name, addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the process (SIGKILL) and waits for it; a no-op when none runs.
func (p *process) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// cleanup stops the process when t ends and, if t failed, logs the last
// lines of its log (all of it when lines is 0), naming it and its address.
func (p *process) cleanup(t testing.TB, name string, lines int) {
	t.Cleanup(func() {
		p.stop()
		if !t.Failed() {
			return
		}
		p.mu.Lock()
		addr := p.addr
		p.mu.Unlock()
		if b, err := os.ReadFile(p.logPath); err == nil {
			log := string(b)
			if lines > 0 {
				log = lastLines(log, lines, "\n")
			}
			t.Logf("%s log (%s):\n%s", name, addr, log)
		}
	})
}

// findBinary returns the path of the executable name, looking in PATH and
// then in dirs, which are often not in a test's PATH; the error says which
// package installs it.
func findBinary(name, pkg string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: apt-get install %s", name, pkg)
}

func (p *process) tailLog() string {
	b, _ := os.ReadFile(p.logPath)
	return lastLines(string(b), 5, " | ")
}

// lastLines returns the last n lines of s, joined by sep.
func lastLines(s string, n int, sep string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, sep)
}
