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

// crashOptions is the store configuration of the crash child: a quota
// small enough that compaction, and then dropping aggregates, happen
// within a few runs, and a clock that makes every reading old enough to
// compact.
func crashOptions() Options {
	return Options{MaxBytes: 256 << 10, CompactAge: time.Minute, Now: func() time.Time { return t0.Add(1000 * time.Hour) }}
}

// TestCrashChild is the child process of TestCrashRecovery: it appends
// batches (which compacts and drops under its quota), acks old readings
// and aggregates in a loop, and after each commit writes one line to
// stdout, "committed SEQ…", "acked SEQ…" or "aggacked FROM TO…", until it
// is killed. Before each ack it writes "acking SEQ…" or "aggacking FROM
// TO…": those may be gone after a kill.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("child process of TestCrashRecovery")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := Open(path, crashOptions())
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
			aggs, err := s.PendingAggregates(2)
			if err != nil {
				fail(err)
			}
			var ranges, froms []uint64
			for _, a := range aggs {
				ranges = append(ranges, a.SeqFrom, a.SeqTo)
				froms = append(froms, a.SeqFrom)
			}
			report("aggacking", ranges)
			if err := s.AckAggregates(froms); err != nil {
				fail(err)
			}
			report("aggacked", ranges)
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

// TestCrashRecovery SIGKILLs a child that is appending, compacting,
// dropping and acking, at random points, several times over. After each
// kill the database must open without being judged corrupt, and account
// for every reading the child reported committed: still pending, inside a
// pending or acked aggregate, inside a gap event, or acked; none it
// reported acked may be pending; seqs are strictly increasing and never
// reused by the next child.
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
	var aggAcked [][2]uint64    // aggregate ranges whose ack was started
	inRanges := func(seq uint64, rs [][2]uint64) bool {
		for _, r := range rs {
			if r[0] <= seq && seq <= r[1] {
				return true
			}
		}
		return false
	}
	compacted := false

	// At least 16 kills; more, up to 64, until one child has written
	// enough to compact under its quota (a loaded machine writes less
	// before each random kill).
	const runs, maxRuns = 16, 64
	for run := 0; run < runs || !compacted && run < maxRuns; run++ {
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
			case "aggacking":
				for i := 0; i+1 < len(seqs); i += 2 {
					aggAcked = append(aggAcked, [2]uint64{seqs[i], seqs[i+1]})
				}
			}
		}

		s, err := Open(path, crashOptions())
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
		aggs, err := s.PendingAggregates(1 << 30)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		var pendingAggs [][2]uint64
		for _, a := range aggs {
			pendingAggs = append(pendingAggs, [2]uint64{a.SeqFrom, a.SeqTo})
			compacted = true
		}
		evs, err := s.PendingEvents(1 << 30)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		var gaps [][2]uint64
		for _, g := range gapsOf(t, evs) {
			gaps = append(gaps, [2]uint64{g.FromSeq, g.ToSeq})
		}
		for seq := range present {
			if inRanges(seq, gaps) || inRanges(seq, pendingAggs) {
				t.Errorf("run %d: pending seq %d is also inside a gap or an aggregate's range", run, seq)
			}
		}
		for seq := range committed {
			if !acking[seq] && !present[seq] && !inRanges(seq, pendingAggs) &&
				!inRanges(seq, aggAcked) && !inRanges(seq, gaps) {
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
	if !compacted {
		t.Error("no compaction happened under the crash child's quota")
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
	switch {
	case len(fields) == 0:
		t.Fatalf("empty child output line")
	case fields[0] == "committed", fields[0] == "acking", fields[0] == "acked",
		fields[0] == "aggacking", fields[0] == "aggacked":
	default:
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
