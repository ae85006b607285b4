package powercut

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A Go process must not use a FUSE mount it serves itself: a goroutine
// blocked in a request to the mount can stall the runtime that would
// answer it (golang/go#21014), and a process killed with such a request
// in flight never finishes exiting. So the file system is served by a
// process of its own: Mount starts the running binary again with
// serveEnv set, and this package's init turns that copy into the server
// before anything else of the binary runs. The two talk over the child's
// stdin and stdout, a request per line and a JSON reply per line.
const serveEnv = "HEARTH_POWERCUT_SERVE"

func init() {
	if spec := os.Getenv(serveEnv); spec != "" {
		os.Exit(serve(spec, os.Stdin, os.Stdout))
	}
}

// serveSpec is what the server process mounts.
type serveSpec struct {
	Backing string        `json:"backing"`
	Mount   string        `json:"mount"`
	Expire  time.Duration `json:"expire"`
}

// reply answers one request; the first reply says whether the mount
// succeeded.
type reply struct {
	Err    string `json:"err,omitempty"`
	Undone int    `json:"undone,omitempty"`
	Stats  Stats  `json:"stats"`
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// serve mounts the file system spec names and answers requests from in
// until it is closed or asked to close. A closed in means the process
// that started it is gone: the mount is then detached, so that what
// still uses it fails instead of hanging.
func serve(spec string, in io.Reader, out io.Writer) int {
	var sp serveSpec
	enc := json.NewEncoder(out)
	if err := json.Unmarshal([]byte(spec), &sp); err != nil {
		enc.Encode(reply{Err: fmt.Sprintf("powercut: bad %s: %v", serveEnv, err)})
		return 2
	}
	s, err := mountServer(sp.Backing, sp.Mount, Options{Expire: sp.Expire})
	if err != nil {
		enc.Encode(reply{Err: err.Error()})
		return 1
	}
	enc.Encode(reply{})
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch req := sc.Text(); req {
		case "stats":
			enc.Encode(reply{Stats: s.Stats()})
		case "cut":
			n, err := s.Cut()
			enc.Encode(reply{Undone: n, Err: errText(err)})
		case "close":
			err := s.Close()
			enc.Encode(reply{Stats: s.Stats(), Err: errText(err)})
			if err == nil {
				return 0
			}
		default:
			enc.Encode(reply{Err: fmt.Sprintf("powercut: unknown request %q", req)})
		}
	}
	s.abandon()
	return 0
}

// abandon detaches the mount without waiting for its users.
func (f *server) abandon() {
	f.mu.Lock()
	srv := f.conn
	f.conn = nil
	f.mu.Unlock()
	if srv == nil {
		return
	}
	if err := srv.Unmount(); err != nil {
		_ = syscall.Unmount(f.mnt, syscall.MNT_DETACH)
	}
}

// FS is a mounted power-cut file system, served by a process of its own.
// Its methods are safe for concurrent use.
type FS struct {
	backing, mnt string

	mu     sync.Mutex
	cmd    *exec.Cmd
	in     io.WriteCloser
	dec    *json.Decoder
	stderr *lockedBuffer
	done   bool
}

// Mount mounts a power-cut view of backing (an existing directory) at
// mountpoint (an existing, empty directory), served by a copy of the
// running binary. It needs root and /dev/fuse. Removed entries wait in
// backing+".trash" until their removal is durable.
func Mount(backing, mountpoint string, opt Options) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	if mountpoint, err = filepath.Abs(mountpoint); err != nil {
		return nil, err
	}
	spec, err := json.Marshal(serveSpec{Backing: backing, Mount: mountpoint, Expire: opt.Expire})
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("powercut: find the binary to serve the file system: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), serveEnv+"="+string(spec))
	// Its own process group: an interrupt at the terminal goes to the
	// tests, which unmount; the server ends when its stdin closes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f := &FS{backing: backing, mnt: mountpoint, cmd: cmd, stderr: &lockedBuffer{}}
	cmd.Stderr = f.stderr
	if f.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	f.dec = json.NewDecoder(stdout)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("powercut: start the file system process: %w", err)
	}
	var r reply
	if err := f.dec.Decode(&r); err != nil || r.Err != "" {
		f.in.Close()
		cmd.Wait()
		if err == nil {
			err = errors.New(r.Err)
		}
		return nil, fmt.Errorf("powercut: mount %s: %w%s", mountpoint, err, f.stderr.tail())
	}
	return f, nil
}

// call sends one request and returns the server's reply.
func (f *FS) call(req string) (reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return reply{}, errors.New("powercut: file system already closed")
	}
	var r reply
	if _, err := io.WriteString(f.in, req+"\n"); err != nil {
		return r, fmt.Errorf("powercut: %s: the file system process is gone: %w%s", req, err, f.stderr.tail())
	}
	if err := f.dec.Decode(&r); err != nil {
		return r, fmt.Errorf("powercut: %s: the file system process is gone: %w%s", req, err, f.stderr.tail())
	}
	if r.Err != "" {
		return r, errors.New(r.Err)
	}
	return r, nil
}

// Dir returns the mount point.
func (f *FS) Dir() string { return f.mnt }

// Backing returns the backing directory.
func (f *FS) Backing() string { return f.backing }

// Stats returns the counters.
func (f *FS) Stats() (Stats, error) {
	r, err := f.call("stats")
	return r.Stats, err
}

// Cut loses power: it unmounts the file system (every process that had a
// file open on it must have exited), undoes every change not made durable,
// newest first, and mounts it again. It returns how many changes it undid.
func (f *FS) Cut() (int, error) {
	r, err := f.call("cut")
	return r.Undone, err
}

// Close unmounts the file system and keeps everything, as a clean
// shutdown that synced its disk would, and ends the server process. The
// processes using the file system must have exited; if one has not, the
// mount is detached and the error says so.
func (f *FS) Close() error {
	f.mu.Lock()
	done := f.done
	f.mu.Unlock()
	if done {
		return nil
	}
	_, err := f.call("close")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return err
	}
	f.done = true
	f.in.Close()
	exited := make(chan error, 1)
	go func() { exited <- f.cmd.Wait() }()
	select {
	case werr := <-exited:
		if err == nil && werr != nil {
			err = fmt.Errorf("powercut: file system process: %w%s", werr, f.stderr.tail())
		}
	case <-time.After(30 * time.Second):
		f.cmd.Process.Kill()
		<-exited
		err = errors.Join(err, fmt.Errorf("powercut: file system process did not exit; killed%s", f.stderr.tail()))
	}
	return err
}

// MountTemp mounts a power-cut file system over a fresh backing directory
// in a temporary directory of tb's and returns it; it is unmounted when tb
// ends (its processes must have exited by then). A mount that fails ends
// tb, saying that it needs root and /dev/fuse.
func MountTemp(tb testing.TB) *FS {
	tb.Helper()
	root := tb.TempDir()
	backing, mnt := filepath.Join(root, "disk"), filepath.Join(root, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	f, err := Mount(backing, mnt, Options{})
	if err != nil {
		tb.Fatalf("the power-cut file system is a FUSE mount, which needs root and /dev/fuse: %v", err)
	}
	tb.Cleanup(func() {
		if err := f.Close(); err != nil {
			tb.Errorf("unmount the power-cut file system: %v", err)
		}
	})
	return f
}

// lockedBuffer keeps the server's stderr for error messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 64<<10 {
		b.b.Reset()
	}
	return b.b.Write(p)
}

// tail is the last of what the server wrote to stderr, as a suffix for
// an error message.
func (b *lockedBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := bytes.TrimSpace(b.b.Bytes())
	if len(s) == 0 {
		return ""
	}
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return "; the file system process said: " + string(s)
}
