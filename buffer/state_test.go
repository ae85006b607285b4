package buffer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openState(t *testing.T, path string, mirror *Store) *State {
	t.Helper()
	s, err := OpenState(path, mirror, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantMeta(t *testing.T, m interface {
	Meta(string) (string, bool, error)
}, key, want string) {
	t.Helper()
	v, ok, err := m.Meta(key)
	if err != nil || !ok || v != want {
		t.Errorf("Meta(%q) = %q, %v, %v; want %q", key, v, ok, err, want)
	}
}

// TestStateKeepsAnyKey: values set are there after a reopen, read from
// the file alone, and copied to the buffer.
func TestStateKeepsAnyKey(t *testing.T) {
	dir := t.TempDir()
	st := openTest(t, filepath.Join(dir, "hearth.db"), Options{})
	s := openState(t, filepath.Join(dir, "state.json"), st)
	for k, v := range map[string]string{"safety.highest_version": "12", "safety.lease": `{"id":"a"}`, "anything.else": "x"} {
		if err := s.SetMeta(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetMeta("safety.highest_version", "13"); err != nil {
		t.Fatal(err)
	}
	again := openState(t, s.Path(), nil)
	wantMeta(t, again, "safety.highest_version", "13")
	wantMeta(t, again, "safety.lease", `{"id":"a"}`)
	wantMeta(t, again, "anything.else", "x")
	if _, ok, _ := again.Meta("missing"); ok {
		t.Errorf("a key never set is there")
	}
	wantMeta(t, st, "safety.highest_version", "13") // the spare copy
	if _, err := os.Stat(s.Path() + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("a temp file is left beside the state file (stat: %v)", err)
	}
}

// TestStateImportsFromBuffer: an agent that kept its lease state in the
// buffer's meta table finds it in the State file it creates, without the
// buffer's own keys.
func TestStateImportsFromBuffer(t *testing.T) {
	dir := t.TempDir()
	st := openTest(t, filepath.Join(dir, "hearth.db"), Options{})
	if _, _, err := st.ReserveSeqs(10); err != nil { // the store's own meta key
		t.Fatal(err)
	}
	for k, v := range map[string]string{"safety.highest_version": "5", "safety.local_lease": "{}"} {
		if err := st.SetMeta(k, v); err != nil {
			t.Fatal(err)
		}
	}
	s := openState(t, filepath.Join(dir, "state.json"), st)
	wantMeta(t, s, "safety.highest_version", "5")
	wantMeta(t, s, "safety.local_lease", "{}")
	if _, ok, _ := s.Meta(metaSeqReserved); ok {
		t.Errorf("the buffer's own %s was imported", metaSeqReserved)
	}
	// From now on the file is what counts, with or without the buffer.
	wantMeta(t, openState(t, s.Path(), nil), "safety.highest_version", "5")
}

// TestStateSurvivesCorruptBuffer: the buffer found corrupt and started
// fresh keeps the lease state, which lives in the State file; the fresh
// buffer gets its copy back.
func TestStateSurvivesCorruptBuffer(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hearth.db")
	st, err := Open(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := openState(t, filepath.Join(dir, "state.json"), st)
	if err := s.SetMeta("safety.highest_version", "42"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.WriteFile(db, []byte(strings.Repeat("not a database ", 500)), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := openTest(t, db, Options{})
	if _, ok, _ := fresh.Meta("safety.highest_version"); ok {
		t.Fatalf("the corrupt buffer was not replaced: it still has the version")
	}
	s = openState(t, s.Path(), fresh)
	wantMeta(t, s, "safety.highest_version", "42")
	wantMeta(t, fresh, "safety.highest_version", "42")
}

// TestStateCorruptFileRecovered: an unreadable State file is moved aside
// and its keys recovered from the buffer's copy; a temp file left by a
// cut write is removed and the old file stands.
func TestStateCorruptFileRecovered(t *testing.T) {
	dir := t.TempDir()
	st := openTest(t, filepath.Join(dir, "hearth.db"), Options{})
	path := filepath.Join(dir, "state.json")
	s := openState(t, path, st)
	if err := s.SetMeta("safety.highest_version", "9"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", []byte(`{"safety.highest_version":"1`), 0o600); err != nil {
		t.Fatal(err)
	}
	wantMeta(t, openState(t, path, st), "safety.highest_version", "9")
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temp file of a cut write is still there (stat: %v)", err)
	}

	if err := os.WriteFile(path, []byte(`{"safety.highest_ver`), 0o600); err != nil {
		t.Fatal(err)
	}
	wantMeta(t, openState(t, path, st), "safety.highest_version", "9")
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 {
		t.Errorf("the unreadable state file was not moved aside: %v", aside)
	}
}
