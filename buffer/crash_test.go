package buffer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crashEnv names the database a crash child appends to; when it is set,
// TestCrashChild runs as the child of TestCrashRecovery.
const crashEnv = "HEARTH_BUFFER_CRASH_CHILD_DB"

// TestCrashChild is the child process of TestCrashRecovery: it appends
// batches and acks old readings in a loop, and after each commit writes one
// line to stdout, "committed SEQ…" or "acked SEQ…", until it is killed.
// Before each ack it writes "acking SEQ…": those may be gone after a kill.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("child process of TestCrashRecovery")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := Open(path, Options{})
	if err != nil {
		fail(err)
	}
	// Stop on our own if the parent never kills us.
	stop := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(stop); i++ {
		got, err := s.Append(readings(i, 1+i%25))
		if err != nil {
			fail(err)
		}
		report("committed", seqsOf(got))
		if i%5 == 4 {
			old, err := s.Pending(7)
			if err != nil {
				fail(err)
			}
			report("acking", seqsOf(old))
			if err := s.Ack(seqsOf(old)); err != nil {
				fail(err)
			}
			report("acked", seqsOf(old))
		}
	}
	os.Exit(3)
}

// report writes one line with a single write, so a kill cannot tear it.
func report(what string, seqs []uint64) {
	var b strings.Builder
	b.WriteString(what)
	for _, s := range seqs {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(s, 10))
	}
	b.WriteByte('\n')
	if _, err := os.Stdout.WriteString(b.String()); err != nil {
		os.Exit(4)
	}
}

// TestCrashRecovery SIGKILLs a child that is appending and acking, at
// random points, several times over. After each kill the database must open
// without being judged corrupt, and hold every reading the child reported
// committed and did not start to ack, none it reported acked, in strictly
// increasing seq order, with seqs never reused by the next child.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped in -short mode")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buffer.db")
	committed := map[uint64]bool{}
	acked := map[uint64]bool{}
	acking := map[uint64]bool{} // an ack was started; it may have committed
	seen := map[uint64]bool{}   // pending at an earlier check
	var lastSeq uint64          // highest seq in existence after the previous kill

	const runs = 8
	for run := range runs {
		lines, stderr := runAndKill(t, path, run)

		var maxReported uint64
		for _, line := range lines {
			what, seqs := parseReport(t, line)
			switch what {
			case "committed":
				for _, s := range seqs {
					if s <= lastSeq || s <= maxReported {
						t.Fatalf("run %d: seq %d reported after seq %d (previous runs reached %d)",
							run, s, maxReported, lastSeq)
					}
					maxReported = s
					committed[s] = true
				}
			case "acking":
				for _, s := range seqs {
					acking[s] = true
				}
			case "acked":
				for _, s := range seqs {
					acked[s] = true
				}
			}
		}

		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("run %d: Open after kill: %v\nchild stderr: %s", run, err, stderr)
		}
		if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) > 0 {
			t.Fatalf("run %d: database judged corrupt after kill: %v", run, m)
		}
		if err := quickCheck(context.Background(), s.db); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		present := map[uint64]bool{}
		var prev uint64
		for after := uint64(0); ; {
			page, err := s.PendingAfter(after, 500)
			if err != nil {
				t.Fatalf("run %d: %v", run, err)
			}
			if len(page) == 0 {
				break
			}
			for _, r := range page {
				if r.Seq <= prev {
					t.Fatalf("run %d: seq %d after %d", run, r.Seq, prev)
				}
				prev = r.Seq
				present[r.Seq] = true
				if acked[r.Seq] {
					t.Errorf("run %d: seq %d was reported acked but is pending", run, r.Seq)
				}
				if !committed[r.Seq] && !seen[r.Seq] && r.Seq <= maxReported {
					// Only the batch in flight at the kill may be present unreported.
					t.Errorf("run %d: seq %d is pending but was never reported", run, r.Seq)
				}
			}
			after = page[len(page)-1].Seq
		}
		for seq := range committed {
			if !acking[seq] && !present[seq] {
				t.Errorf("run %d: committed seq %d is missing", run, seq)
			}
		}
		for seq := range present {
			seen[seq] = true
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.LastSeq < maxReported || st.LastSeq < lastSeq {
			t.Errorf("run %d: LastSeq %d below reported %d or previous %d", run, st.LastSeq, maxReported, lastSeq)
		}
		lastSeq = st.LastSeq
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("run %d: %d lines reported, %d pending, last seq %d", run, len(lines), len(present), lastSeq)
		if t.Failed() {
			return
		}
	}
	if len(committed) == 0 {
		t.Fatal("no child ever committed a batch")
	}
}

// runAndKill starts a child on path and SIGKILLs it at a random point. Run 0
// is killed at a random moment from start, possibly while it creates the
// database; later runs once they have committed, while appending. It returns
// the child's stdout lines and its stderr.
func runAndKill(t *testing.T, path string, run int) (lines []string, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if len(lines) == 0 {
				close(first)
			}
			lines = append(lines, sc.Text())
		}
	}()

	if run == 0 {
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
	} else {
		select {
		case <-first:
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			_ = cmd.Wait()
			t.Fatalf("run %d: child committed nothing in 10s; stderr: %s", run, errBuf.String())
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL on Unix
		t.Fatal(err)
	}
	<-done // the pipe reaches EOF once the child is dead
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != -1 {
		// Exit code -1 means killed by a signal; anything else is the child failing.
		t.Fatalf("run %d: child did not die by the kill: %v; stderr: %s", run, err, errBuf.String())
	}
	return lines, errBuf.String()
}

func parseReport(t *testing.T, line string) (string, []uint64) {
	t.Helper()
	fields := strings.Fields(line)
	if len(fields) == 0 || (fields[0] != "committed" && fields[0] != "acking" && fields[0] != "acked") {
		t.Fatalf("unexpected child output %q", line)
	}
	seqs := make([]uint64, 0, len(fields)-1)
	for _, f := range fields[1:] {
		s, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatalf("child output %q: %v", line, err)
		}
		seqs = append(seqs, s)
	}
	return fields[0], seqs
}
