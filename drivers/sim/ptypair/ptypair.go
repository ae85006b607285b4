// Package ptypair gives tests a null-modem cable: two pseudo-terminals
// joined by socat, so an RTU client and the simulator can talk over real
// serial-line file descriptors without hardware.
package ptypair

import (
	"bufio"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

var ptyRe = regexp.MustCompile(`PTY is (\S+)`)

// Start runs `socat -d -d pty,raw,echo=0 pty,raw,echo=0` until the test
// ends and returns the two pty paths. The test is skipped when socat is
// not installed.
func Start(t testing.TB) (a, b string) {
	t.Helper()
	path, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("socat not installed")
	}
	cmd := exec.Command(path, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	found := make(chan []string, 1)
	go func() {
		defer close(done)
		var ptys []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if m := ptyRe.FindStringSubmatch(line); m != nil {
				ptys = append(ptys, m[1])
			}
			if strings.Contains(line, "starting data transfer loop") && ptys != nil {
				found <- ptys
				ptys = nil
			}
		}
		cmd.Wait()
	}()
	select {
	case ptys := <-found:
		if len(ptys) != 2 {
			t.Fatalf("socat announced %d ptys, want 2: %v", len(ptys), ptys)
		}
		return ptys[0], ptys[1]
	case <-done:
		t.Fatal("socat exited before announcing its ptys")
	case <-time.After(10 * time.Second):
		t.Fatal("socat did not announce its ptys within 10s")
	}
	return "", ""
}
