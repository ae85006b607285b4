package buffer

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// State is a small durable key-value file kept apart from the buffer's
// database, for what must survive both a power cut and a corrupt buffer:
// the lease state (the active lease, the highest version accepted, the
// fallback), which the control loop reads and writes through Meta and
// SetMeta. Each SetMeta rewrites the whole file (it holds a few hundred
// bytes) with write-temp, fsync, rename, fsync of the directory, so when
// SetMeta returns the value is on the medium, and a power cut at any
// moment leaves either the old file or the new one, never a torn one.
//
// The buffer's meta table keeps a copy of every key (written after the
// file, without a sync), so that either one can be lost to a bad medium:
// a missing State file is filled from the table, and a corrupt one is
// moved aside and filled from it too.
//
// Methods are safe for concurrent use.
type State struct {
	path   string
	mirror *Store // nil: no copy in a buffer
	log    *slog.Logger

	mu sync.Mutex
	m  map[string]string
	// recover says the file was missing or unreadable at open: UseMirror
	// fills it from the buffer.
	recover bool
}

// OpenState opens the State file at path, or creates it. When the file is
// missing (the first start of an agent that kept these keys only in its
// buffer) or unreadable (then it is moved aside to path+".corrupt-"+time
// and logged), it starts from the keys of mirror's meta table that are not
// the store's own; mirror may be nil. Every key later set is copied to
// mirror too. log may be nil.
func OpenState(path string, mirror *Store, log *slog.Logger) (*State, error) {
	s, err := OpenStateAlone(path, log)
	if err != nil || mirror == nil {
		return s, err
	}
	if err := s.UseMirror(mirror); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenStateAlone opens the State file at path without a buffer to copy
// keys to, so that the buffer can be opened with it (Options.Marks);
// UseMirror then attaches the buffer. Missing or unreadable (moved
// aside), the file starts empty, and UseMirror fills it from the buffer.
// log may be nil.
func OpenStateAlone(path string, log *slog.Logger) (*State, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &State{path: path, log: log, m: map[string]string{}}
	// A temp file is what a cut SetMeta left; the old file stands.
	if err := os.Remove(path + ".tmp"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		err = json.Unmarshal(b, &s.m)
		if err == nil && s.m != nil {
			return s, nil
		}
		if err == nil {
			err = errors.New("not a JSON object")
		}
		to := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(path, to); rerr != nil {
			return nil, fmt.Errorf("open state %s: unreadable (%v), and moving it aside failed: %w", path, err, rerr)
		}
		log.Warn("state file unreadable, moved aside; recovering its keys from the buffer", "path", path, "moved_to", to, "err", err)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s.m = map[string]string{}
	s.recover = true
	return s, nil
}

// UseMirror makes mirror's meta table the spare copy of every key. When
// the file was missing or unreadable at open (the first start of an agent
// that kept these keys only in its buffer, or a bad medium), the keys the
// State does not hold yet are recovered from mirror's meta table (those
// that are not the store's own). Then mirror is brought up to date with
// the file.
func (s *State) UseMirror(mirror *Store) error {
	s.mu.Lock()
	s.mirror = mirror
	if s.recover {
		s.recover = false
		kept, err := mirror.foreignMeta()
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("open state %s: recover keys from the buffer: %w", s.path, err)
		}
		next := maps.Clone(s.m)
		added := 0
		for k, v := range kept {
			if _, ok := next[k]; !ok {
				next[k] = v
				added++
			}
		}
		if added > 0 {
			if err := s.write(next); err != nil {
				s.mu.Unlock()
				return fmt.Errorf("open state %s: %w", s.path, err)
			}
			s.m = next
			s.log.Info("state file filled from the buffer's meta table", "path", s.path, "keys", added)
		}
	}
	s.mu.Unlock()
	s.copyToMirror()
	return nil
}

// Path returns the State file's path.
func (s *State) Path() string { return s.path }

// Meta returns the value stored under key, and whether there is one.
func (s *State) Meta(key string) (value string, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	value, ok = s.m[key]
	return value, ok, nil
}

// SetMeta stores value under key, replacing any previous value, and
// returns once the file holding it is on the medium. On error the
// previous value stays, in memory and on disk.
func (s *State) SetMeta(key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if changed, err := s.setLocked(key, value); err != nil || !changed {
		return err
	}
	if s.mirror != nil {
		if err := s.mirror.SetMeta(key, value); err != nil {
			// The State file has it; the copy is only a spare.
			s.log.Warn("state: copy to the buffer's meta table failed", "key", key, "err", err)
		}
	}
	return nil
}

// write replaces the file with m, durably.
func (s *State) write(m map[string]string) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return writeDurable(s.path, b)
}

// setLocal stores value under key durably, like SetMeta, without a copy
// in the buffer: for what the buffer itself keeps here (its high-water
// marks), which a copy inside it would not protect.
func (s *State) setLocal(key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.setLocked(key, value)
	return err
}

// setLocked writes value under key to the file, and reports whether that
// changed anything.
func (s *State) setLocked(key, value string) (bool, error) {
	if v, ok := s.m[key]; ok && v == value {
		return false, nil
	}
	next := maps.Clone(s.m)
	next[key] = value
	if err := s.write(next); err != nil {
		return false, fmt.Errorf("write state %q: %w", key, err)
	}
	s.m = next
	return true, nil
}

// copyToMirror brings the buffer's copy up to date with the file, e.g.
// after the buffer was found corrupt and started afresh. It takes the
// lock only to copy the keys: the buffer may be writing its marks here.
func (s *State) copyToMirror() {
	s.mu.Lock()
	m := maps.Clone(s.m)
	s.mu.Unlock()
	if s.mirror == nil {
		return
	}
	for k, v := range m {
		if k == metaSeqMark || k == metaEventMark {
			continue
		}
		if old, ok, err := s.mirror.Meta(k); err == nil && ok && old == v {
			continue
		}
		if err := s.mirror.SetMeta(k, v); err != nil {
			s.log.Warn("state: copy to the buffer's meta table failed", "key", k, "err", err)
			return
		}
	}
}

// writeDurable replaces path with data so that a power cut at any moment
// leaves the old content or the new, whole: the data goes to path+".tmp",
// which is synced, renamed over path, and the directory synced, since a
// rename is only durable once its directory is.
func writeDurable(path string, data []byte) (err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err == nil && syncs {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return classify(err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if syncs {
		return syncDir(filepath.Dir(path))
	}
	return nil
}

// syncDir fsyncs a directory, making the renames and creations in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
