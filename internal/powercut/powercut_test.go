package powercut

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// mountTest mounts a fresh power-cut file system for the test.
func mountTest(t *testing.T) *FS { return MountTemp(t) }

func cut(t *testing.T, f *FS) int {
	t.Helper()
	n, err := f.Cut()
	if err != nil {
		t.Fatalf("cut: %v", err)
	}
	return n
}

func stats(t *testing.T, f *FS) Stats {
	t.Helper()
	st, err := f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func writeFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func wantContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("after the cut: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("after the cut %s holds %q, want %q", filepath.Base(path), got, want)
	}
}

// TestUnsyncedDataIsLost: what was written after the last fsync of a file
// is gone after a cut, overwrites and growth alike; what was synced stays.
func TestUnsyncedDataIsLost(t *testing.T) {
	f := mountTest(t)
	p := filepath.Join(f.Dir(), "a")
	writeFile(t, p, []byte("synced!!"), true)
	syncDir(t, f.Dir())
	fh, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("LOST"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("-and-beyond"), 8); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	wantContent(t, p, []byte("syLOST!!-and-beyond"))
	if n := cut(t, f); n != 2 {
		t.Errorf("cut undid %d changes, want the 2 writes", n)
	}
	wantContent(t, p, []byte("synced!!"))
}

// TestTruncateIsUndone: a truncation not synced is undone, the bytes cut
// off come back.
func TestTruncateIsUndone(t *testing.T) {
	f := mountTest(t)
	p := filepath.Join(f.Dir(), "t")
	writeFile(t, p, []byte("0123456789"), true)
	syncDir(t, f.Dir())
	if err := os.Truncate(p, 3); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, []byte("xy"), false) // O_TRUNC, then a write
	cut(t, f)
	wantContent(t, p, []byte("0123456789"))
}

// TestEntriesNeedTheirDirectorySynced: a file created, synced, but whose
// directory was not, is gone after a cut; removing and renaming are undone
// the same way until the directory is synced.
func TestEntriesNeedTheirDirectorySynced(t *testing.T) {
	f := mountTest(t)
	dir := f.Dir()
	writeFile(t, filepath.Join(dir, "new"), []byte("data"), true)
	writeFile(t, filepath.Join(dir, "kept"), []byte("kept"), true)
	writeFile(t, filepath.Join(dir, "old"), []byte("old"), true)
	syncDir(t, dir) // kept and old are durable
	writeFile(t, filepath.Join(dir, "new2"), []byte("data"), true)
	if err := os.Remove(filepath.Join(dir, "kept")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "new"), filepath.Join(dir, "old")); err != nil {
		t.Fatal(err)
	}
	cut(t, f)
	if _, err := os.Stat(filepath.Join(dir, "new2")); !os.IsNotExist(err) {
		t.Errorf("a file whose directory was never synced survived the cut (stat: %v)", err)
	}
	wantContent(t, filepath.Join(dir, "kept"), []byte("kept"))
	wantContent(t, filepath.Join(dir, "old"), []byte("old"))
	wantContent(t, filepath.Join(dir, "new"), []byte("data"))
	if ents, _ := os.ReadDir(f.Backing() + ".trash"); len(ents) != 0 {
		t.Errorf("the trash holds %d entries after the cut, want none", len(ents))
	}
}

// TestDurableReplace: write-temp, fsync, rename, fsync-dir survives a cut
// whole; without the syncs the old content comes back.
func TestDurableReplace(t *testing.T) {
	f := mountTest(t)
	dir := f.Dir()
	p := filepath.Join(dir, "state")
	writeFile(t, p, []byte("v1"), true)
	syncDir(t, dir)

	writeFile(t, p+".tmp", []byte("v2"), true)
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	syncDir(t, dir)
	writeFile(t, p+".tmp", []byte("v3"), false)
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	wantContent(t, p, []byte("v3"))
	cut(t, f)
	wantContent(t, p, []byte("v2"))
	if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the unsynced temp file survived the cut (stat: %v)", err)
	}
}

// TestSQLiteCommits: on this file system SQLite in WAL mode loses the
// commits a cut takes with synchronous=NORMAL, keeps them with FULL, and
// the database opens with integrity ok either way.
func TestSQLiteCommits(t *testing.T) {
	for _, tc := range []struct {
		sync string
		want int
	}{{"NORMAL", 1}, {"FULL", 6}} {
		t.Run(tc.sync, func(t *testing.T) {
			f := mountTest(t)
			path := filepath.Join(f.Dir(), "t.db")
			open := func() *sql.DB {
				db, err := sql.Open("sqlite3", path+"?_journal_mode=WAL&_synchronous="+tc.sync)
				if err != nil {
					t.Fatal(err)
				}
				db.SetMaxOpenConns(1)
				return db
			}
			// A child process commits and is killed with the database
			// open, as a crash would leave it: nothing checkpointed.
			child := exec.Command(os.Args[0], "-test.run=^TestSQLiteChild$")
			child.Env = append(os.Environ(), "POWERCUT_SQLITE_CHILD="+path+"?_journal_mode=WAL&_synchronous="+tc.sync)
			out, err := child.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			child.Stderr = os.Stderr
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || line != "committed\n" {
				child.Process.Kill()
				child.Wait()
				t.Fatalf("child: %q, %v", line, err)
			}
			child.Process.Kill()
			child.Wait()
			undone := cut(t, f)
			db := open()
			defer db.Close()
			var check string
			if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
				t.Fatalf("integrity check after the cut: %q, %v", check, err)
			}
			var n int
			if err := db.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != tc.want {
				t.Errorf("synchronous=%s: %d rows after the cut, want %d", tc.sync, n, tc.want)
			}
			st := stats(t, f)
			t.Logf("synchronous=%s: %d rows, %d changes undone, %d fsyncs, %d dir fsyncs", tc.sync, n, undone, st.Fsyncs, st.DirFsyncs)
		})
	}
}

// TestSQLiteChild is the child process of TestSQLiteCommits: it creates a
// table with one row, checkpoints, commits five more rows one at a time,
// says so and waits to be killed. Run on its own it does nothing.
func TestSQLiteChild(t *testing.T) {
	dsn := os.Getenv("POWERCUT_SQLITE_CHILD")
	if dsn == "" {
		return
	}
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range []string{"CREATE TABLE t (v INTEGER)", "INSERT INTO t VALUES (0)", "PRAGMA wal_checkpoint(TRUNCATE)",
		"INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)", "INSERT INTO t VALUES (4)", "INSERT INTO t VALUES (5)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("committed")
	select {}
}

// TestWearCounts: bytes in writes are counted as written, dirty pages once
// at the fsync of their file however often they were written.
func TestWearCounts(t *testing.T) {
	f := mountTest(t)
	p := filepath.Join(f.Dir(), "w")
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	before := stats(t, f)
	for range 10 {
		if _, err := fh.WriteAt(make([]byte, 100), 0); err != nil { // one page, ten times
			t.Fatal(err)
		}
	}
	if _, err := fh.WriteAt(make([]byte, 2*PageSize), PageSize); err != nil { // two more pages
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	st := stats(t, f)
	if got := st.WriteBytes - before.WriteBytes; got != 1000+2*PageSize {
		t.Errorf("write bytes %d, want %d", got, 1000+2*PageSize)
	}
	if got := st.Medium() - before.Medium(); got != 3*PageSize {
		t.Errorf("medium bytes %d, want three pages (%d)", got, 3*PageSize)
	}
	if st.Fsyncs-before.Fsyncs != 1 || st.DirtyBytes != 0 {
		t.Errorf("after one fsync: %d fsyncs counted, %d bytes still dirty", st.Fsyncs-before.Fsyncs, st.DirtyBytes)
	}
}

// TestServerLeavesWithItsParent: the file system is served by a process
// of its own, which detaches the mount and exits when the process that
// started it goes away (its stdin closes) without closing it: a test
// killed by its timeout leaves no mount behind.
func TestServerLeavesWithItsParent(t *testing.T) {
	f := mountTest(t)
	if f.cmd.Process.Pid == os.Getpid() {
		t.Fatal("the file system is served by the process that uses it")
	}
	writeFile(t, filepath.Join(f.Dir(), "x"), []byte("x"), true)
	if !mounted(t, f.Dir()) {
		t.Fatalf("%s is not a mount point while the file system runs", f.Dir())
	}
	f.mu.Lock()
	f.in.Close() // as when this process dies
	f.mu.Unlock()
	exited := make(chan error, 1)
	go func() { exited <- f.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the server exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		f.cmd.Process.Kill()
		t.Fatal("the server did not exit when its parent went away")
	}
	f.mu.Lock()
	f.done = true
	f.mu.Unlock()
	if mounted(t, f.Dir()) {
		t.Errorf("%s is still mounted after the server left", f.Dir())
	}
}

// mounted says whether dir is a mount point.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}
