// Package powercut is a file system for tests that can lose power: a FUSE
// loopback of a backing directory that keeps every change made since the
// last fsync undoable, in the spirit of Jepsen's LazyFS. Cut, called once
// the processes using it are dead, unmounts it, undoes every change that
// was not made durable, and mounts it again, as a machine that lost power
// and rebooted would find its disk. The file system is served by a copy
// of the running binary in a process of its own (see process.go): the
// process that uses a FUSE mount must not be the one that serves it.
//
// What is durable follows POSIX at its strictest:
//
//   - a file's data and size, once the file is fsynced (fsync or
//     fdatasync, on any descriptor of it);
//   - a name created, removed or renamed in a directory (create, mkdir,
//     unlink, rmdir, rename), once that directory is fsynced (for a rename,
//     the directory it was renamed into);
//   - nothing else: the kernel's writeback after 30 s, which makes most
//     data durable on a real machine, is not modelled, so a cut loses
//     everything unsynced however old it is.
//
// Links, symlinks, device nodes, ownership, modes and times pass through
// and count as durable at once. The backing directory always holds the
// current content; undo information lives in memory.
//
// The same file system counts what would wear a flash medium: the bytes
// in write requests, fsyncs, and the 4 KiB pages written back, each dirty
// page counted once when its file is fsynced or, as the kernel's writeback
// would, once it has been dirty for Options.Expire.
package powercut

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// PageSize is the unit of writeback the wear figures count in.
const PageSize = 4096

// DefaultExpire is the kernel's dirty_expire_centisecs default: how long
// a dirty page waits before writeback writes it.
const DefaultExpire = 30 * time.Second

// Options configures a mount.
type Options struct {
	// Expire is how long a page stays dirty before it counts as written
	// back (wear only: it does not make it durable). 0 means DefaultExpire.
	Expire time.Duration
}

// Stats is what the file system has seen since it was mounted first.
type Stats struct {
	Writes     int64 `json:"writes"`      // write requests
	WriteBytes int64 `json:"write_bytes"` // bytes in write requests
	Fsyncs     int64 `json:"fsyncs"`      // fsync and fdatasync of files
	DirFsyncs  int64 `json:"dir_fsyncs"`  // fsync of directories
	// FlushedBytes counts the pages written back so far (PageSize each):
	// at an fsync of their file or after Expire. DirtyBytes are the pages
	// dirty now, which will be written back later: what a workload cost
	// the medium over a span is the growth of their sum.
	FlushedBytes int64 `json:"flushed_bytes"`
	DirtyBytes   int64 `json:"dirty_bytes"`
	Pending      int   `json:"pending"` // changes a cut would undo now
	Cuts         int   `json:"cuts"`
	Undone       int64 `json:"undone"` // changes undone by all cuts
}

// Medium returns the bytes written back plus those that will be.
func (s Stats) Medium() int64 { return s.FlushedBytes + s.DirtyBytes }

// server is a mounted power-cut file system, served by this process.
// Its methods are safe for concurrent use. The process that serves a FUSE
// mount must not use it (see FS), so a server runs in a process of its
// own and nothing else there touches the mount.
type server struct {
	backing string // where the content lives
	trash   string // removed entries wait here until the removal is durable
	mnt     string
	opt     Options

	mu      sync.Mutex
	conn    *fuse.Server     // nil while unmounted
	log     []*change        // undoable changes, oldest first
	files   map[uint64]*file // by backing inode: files with pending data or dirty pages
	dirs    map[uint64]bool  // by backing inode: directories with pending entries
	trashN  int
	stats   Stats
	lastExp time.Time
}

// file is a backing file with undoable data or dirty pages.
type file struct {
	ino     uint64
	fd      *os.File            // read-write, opened through the descriptor that first wrote
	pending int                 // changes of it in the log
	dirty   map[int64]time.Time // page index → when first dirtied since written back
}

// change is one undoable change. Data changes carry the file's size and
// the bytes they overwrote; entry changes carry names relative to the
// backing directory.
type change struct {
	f       *file // data change
	off     int64
	old     []byte // what [off, off+len(old)) held before
	oldSize int64

	kind     entryKind // entry change
	dir      uint64    // the directory whose fsync makes it durable
	from, to string    // relative paths; from is "" for a creation
	trashed  string    // where a replaced or removed entry waits, if any
}

type entryKind int

const (
	dataChange entryKind = iota
	created              // to came into being
	removed              // to was moved to trashed
	renamed              // from became to; an entry replaced at to was moved to trashed
)

// mountServer mounts a power-cut view of backing at mountpoint, served
// by this process. Removed entries wait in backing+".trash" until their
// removal is durable.
func mountServer(backing, mountpoint string, opt Options) (*server, error) {
	if opt.Expire <= 0 {
		opt.Expire = DefaultExpire
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	f := &server{backing: backing, trash: backing + ".trash", mnt: mountpoint, opt: opt,
		files: map[uint64]*file{}, dirs: map[uint64]bool{}}
	if err := os.MkdirAll(f.trash, 0o700); err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *server) mount() error {
	rootOps, err := fs.NewLoopbackRoot(f.backing)
	if err != nil {
		return fmt.Errorf("powercut: loopback root %s: %w", f.backing, err)
	}
	root := &node{LoopbackNode: rootOps.(*fs.LoopbackNode), fsys: f}
	sec := time.Second
	srv, err := fs.Mount(f.mnt, root, &fs.Options{
		AttrTimeout: &sec, EntryTimeout: &sec,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true, FsName: "powercut:" + f.backing, Name: "powercut",
			AllowOther: true, MaxBackground: 64,
		},
	})
	if err != nil {
		return fmt.Errorf("powercut: mount %s: %w", f.mnt, err)
	}
	f.mu.Lock()
	f.conn = srv
	f.mu.Unlock()
	return nil
}

// Dir returns the mount point.
func (f *server) Dir() string { return f.mnt }

// Backing returns the backing directory.
func (f *server) Backing() string { return f.backing }

// Stats returns the counters.
func (f *server) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expireLocked(true)
	st := f.stats
	st.Pending = len(f.log)
	for _, fl := range f.files {
		st.DirtyBytes += int64(len(fl.dirty)) * PageSize
	}
	return st
}

// Cut loses power: it unmounts the file system (every process that had a
// file open on it must have exited), undoes every change not made durable,
// newest first, and mounts it again. It returns how many changes it undid.
func (f *server) Cut() (int, error) {
	if err := f.unmount(); err != nil {
		return 0, err
	}
	f.mu.Lock()
	n := len(f.log)
	var errs []error
	for i := len(f.log) - 1; i >= 0; i-- {
		if err := f.undo(f.log[i]); err != nil {
			errs = append(errs, err)
		}
	}
	f.log = nil
	// The page cache went with the power: dirty pages are never written.
	f.resetLocked()
	f.stats.Cuts++
	f.stats.Undone += int64(n)
	f.mu.Unlock()
	err := f.mount()
	if uerr := errors.Join(errs...); uerr != nil {
		err = errors.Join(fmt.Errorf("powercut: undo: %w", uerr), err)
	}
	return n, err
}

// Close unmounts the file system and keeps everything, as a clean
// shutdown that synced its disk would. The processes using it must have
// exited.
func (f *server) Close() error {
	if err := f.unmount(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expireLocked(false)
	for _, fl := range f.files {
		f.stats.FlushedBytes += int64(len(fl.dirty)) * PageSize
	}
	f.log = nil
	f.resetLocked()
	return os.RemoveAll(f.trash)
}

func (f *server) unmount() error {
	f.mu.Lock()
	srv := f.conn
	f.conn = nil
	f.mu.Unlock()
	if srv == nil {
		return errors.New("powercut: not mounted")
	}
	var err error
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// The kernel may still be releasing the files of a process
		// that was just killed.
		if err = srv.Unmount(); err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		f.mu.Lock()
		f.conn = srv
		f.mu.Unlock()
		return fmt.Errorf("powercut: unmount %s (is a process still using it?): %w", f.mnt, err)
	}
	srv.Wait()
	return nil
}

func (f *server) resetLocked() {
	for _, fl := range f.files {
		fl.fd.Close()
	}
	f.files = map[uint64]*file{}
	f.dirs = map[uint64]bool{}
}

// undo reverts one change on the backing directory.
func (f *server) undo(c *change) error {
	switch c.kind {
	case dataChange:
		if len(c.old) > 0 {
			if _, err := c.f.fd.WriteAt(c.old, c.off); err != nil {
				return err
			}
		}
		return c.f.fd.Truncate(c.oldSize)
	case created:
		return os.RemoveAll(f.abs(c.to))
	case removed:
		return os.Rename(c.trashed, f.abs(c.to))
	case renamed:
		if err := os.Rename(f.abs(c.to), f.abs(c.from)); err != nil {
			return err
		}
		if c.trashed != "" {
			return os.Rename(c.trashed, f.abs(c.to))
		}
	}
	return nil
}

func (f *server) abs(rel string) string { return filepath.Join(f.backing, rel) }

// trashPath names a fresh place in the trash.
func (f *server) trashPathLocked() string {
	f.trashN++
	return filepath.Join(f.trash, strconv.Itoa(f.trashN))
}

// tracked returns the file record of the backing file open as fd (a
// descriptor of the loopback), creating it.
func (f *server) trackedLocked(fd int) (*file, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if fl := f.files[st.Ino]; fl != nil {
		return fl, nil
	}
	// Reopened read-write: the descriptor that writes may be write-only,
	// and undoing needs to read what it overwrites and to write it back.
	rw, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	fl := &file{ino: st.Ino, fd: rw, dirty: map[int64]time.Time{}}
	f.files[st.Ino] = fl
	return fl, nil
}

// recordDataLocked records that [off, off+n) of fl is about to be written
// or that its size is about to change to newSize (n < 0 for a size change
// only), keeping what a cut must restore.
func (f *server) recordDataLocked(fl *file, off, n, newSize int64) error {
	fi, err := fl.fd.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	c := &change{f: fl, off: off, oldSize: size}
	end := off + n
	if n < 0 { // truncate: what lies beyond the new size
		c.off, end = newSize, size
	}
	if end > size {
		end = size
	}
	if end > c.off {
		c.old = make([]byte, end-c.off)
		if _, err := fl.fd.ReadAt(c.old, c.off); err != nil {
			return err
		}
	}
	f.log = append(f.log, c)
	fl.pending++
	return nil
}

// dirtyLocked marks the pages of [off, off+n) dirty for the wear figures.
func (f *server) dirtyLocked(fl *file, off, n int64) {
	if n <= 0 {
		return
	}
	now := time.Now()
	for p := off / PageSize; p <= (off+n-1)/PageSize; p++ {
		if _, ok := fl.dirty[p]; !ok {
			fl.dirty[p] = now
		}
	}
	f.expireLocked(false)
}

// expireLocked counts the pages dirty for longer than Expire as written
// back, at most once a second unless forced.
func (f *server) expireLocked(force bool) {
	now := time.Now()
	if !force && now.Sub(f.lastExp) < time.Second {
		return
	}
	f.lastExp = now
	for _, fl := range f.files {
		for p, t := range fl.dirty {
			if now.Sub(t) >= f.opt.Expire {
				delete(fl.dirty, p)
				f.stats.FlushedBytes += PageSize
			}
		}
		f.dropIfIdleLocked(fl)
	}
}

// syncedLocked makes every change of fl durable and writes its dirty
// pages back.
func (f *server) syncedLocked(fl *file) {
	f.stats.FlushedBytes += int64(len(fl.dirty)) * PageSize
	clear(fl.dirty)
	if fl.pending == 0 {
		return
	}
	kept := f.log[:0]
	for _, c := range f.log {
		if c.f != fl {
			kept = append(kept, c)
		}
	}
	clear(f.log[len(kept):])
	f.log = kept
	fl.pending = 0
	f.dropIfIdleLocked(fl)
}

// dropIfIdleLocked forgets a file with nothing to undo and no dirty page,
// closing its descriptor: files come and go (every temp file is a new one).
func (f *server) dropIfIdleLocked(fl *file) {
	if fl.pending == 0 && len(fl.dirty) == 0 {
		fl.fd.Close()
		delete(f.files, fl.ino)
	}
}

// dirSyncedLocked makes every entry change in the directory with inode ino
// durable, and empties the trash of the entries it removed for good.
func (f *server) dirSyncedLocked(ino uint64) {
	if !f.dirs[ino] {
		return
	}
	kept := f.log[:0]
	for _, c := range f.log {
		if c.kind != dataChange && c.dir == ino {
			if c.trashed != "" {
				_ = os.RemoveAll(c.trashed)
			}
			continue
		}
		kept = append(kept, c)
	}
	clear(f.log[len(kept):])
	f.log = kept
	delete(f.dirs, ino)
}

// recordEntryLocked appends an entry change in the directory at relative
// path dir.
func (f *server) recordEntryLocked(c *change, dir string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.abs(dir), &st); err != nil {
		return err
	}
	c.dir = st.Ino
	f.dirs[st.Ino] = true
	f.log = append(f.log, c)
	return nil
}

// node is a loopback node whose changes are recorded.
type node struct {
	*fs.LoopbackNode
	fsys *server
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeWriter         = (*node)(nil)
	_ fs.NodeWritever       = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeAllocater      = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
)

// WrapChild makes every node of the tree a recording one.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if lb, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: lb, fsys: n.fsys}
	}
	return ops
}

// rel is the node's path relative to the backing directory.
func (n *node) rel() string { return n.Path(nil) }

func handleFd(fh fs.FileHandle) (int, bool) {
	h, ok := fh.(*fileHandle)
	if !ok {
		return 0, false
	}
	return h.lf.PassthroughFd()
}

// fileHandle is an open loopback file that hides its descriptor from the
// kernel: with FUSE passthrough the kernel would write to the backing
// file itself, and no write would be seen, let alone recorded.
type fileHandle struct{ lf *fs.LoopbackFile }

var (
	_ fs.FileReader    = (*fileHandle)(nil)
	_ fs.FileWriter    = (*fileHandle)(nil)
	_ fs.FileWritever  = (*fileHandle)(nil)
	_ fs.FileReleaser  = (*fileHandle)(nil)
	_ fs.FileFlusher   = (*fileHandle)(nil)
	_ fs.FileGetattrer = (*fileHandle)(nil)
	_ fs.FileSetattrer = (*fileHandle)(nil)
	_ fs.FileLseeker   = (*fileHandle)(nil)
	_ fs.FileAllocater = (*fileHandle)(nil)
	_ fs.FileGetlker   = (*fileHandle)(nil)
	_ fs.FileSetlker   = (*fileHandle)(nil)
	_ fs.FileSetlkwer  = (*fileHandle)(nil)
)

func wrapHandle(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &fileHandle{lf: lf}
	}
	return fh
}

func (h *fileHandle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, buf, off)
}
func (h *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return h.lf.Write(ctx, data, off)
}
func (h *fileHandle) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	return h.lf.Writev(ctx, data, off)
}
func (h *fileHandle) Release(ctx context.Context) syscall.Errno { return h.lf.Release(ctx) }
func (h *fileHandle) Flush(ctx context.Context) syscall.Errno   { return h.lf.Flush(ctx) }
func (h *fileHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}
func (h *fileHandle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Setattr(ctx, in, out)
}
func (h *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}
func (h *fileHandle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return h.lf.Allocate(ctx, off, size, mode)
}
func (h *fileHandle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return h.lf.Getlk(ctx, owner, lk, flags, out)
}
func (h *fileHandle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.lf.Setlk(ctx, owner, lk, flags)
}
func (h *fileHandle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.lf.Setlkw(ctx, owner, lk, flags)
}

// beforeWrite records a write of n bytes at off through fh.
func (n *node) beforeWrite(fh fs.FileHandle, off, size int64) syscall.Errno {
	fd, ok := handleFd(fh)
	if !ok {
		return syscall.EBADF
	}
	f := n.fsys
	fl, err := f.trackedLocked(fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := f.recordDataLocked(fl, off, size, 0); err != nil {
		return fs.ToErrno(err)
	}
	f.dirtyLocked(fl, off, size)
	f.stats.Writes++
	f.stats.WriteBytes += size
	return 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	if errno := n.beforeWrite(fh, off, int64(len(data))); errno != 0 {
		return 0, errno
	}
	return fh.(fs.FileWriter).Write(ctx, data, off)
}

func (n *node) Writev(ctx context.Context, fh fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	total := 0
	for _, d := range data {
		total += len(d)
	}
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	if errno := n.beforeWrite(fh, off, int64(total)); errno != 0 {
		return 0, errno
	}
	return fh.(fs.FileWritever).Writev(ctx, data, off)
}

func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	fd, ok := handleFd(fh)
	if !ok {
		return syscall.EBADF
	}
	fl, err := n.fsys.trackedLocked(fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	// Allocation may zero a range (FALLOC_FL_ZERO_RANGE, PUNCH_HOLE) and
	// grow the file: keep the range as for a write.
	if err := n.fsys.recordDataLocked(fl, int64(off), int64(size), 0); err != nil {
		return fs.ToErrno(err)
	}
	return fh.(fs.FileAllocater).Allocate(ctx, off, size, mode)
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		f := n.fsys
		f.mu.Lock()
		defer f.mu.Unlock()
		fd, ok := handleFd(fh)
		var tmp *os.File
		if !ok {
			var err error
			if tmp, err = os.OpenFile(f.abs(n.rel()), os.O_RDWR, 0); err != nil {
				return fs.ToErrno(err)
			}
			defer tmp.Close()
			fd = int(tmp.Fd())
		}
		fl, err := f.trackedLocked(fd)
		if err != nil {
			return fs.ToErrno(err)
		}
		if err := f.recordDataLocked(fl, 0, -1, int64(size)); err != nil {
			return fs.ToErrno(err)
		}
		for p := range fl.dirty {
			if p*PageSize >= int64(size) {
				delete(fl.dirty, p)
			}
		}
	}
	return n.LoopbackNode.Setattr(ctx, fh, in, out)
}

// Fsync makes the file's changes durable (for a directory opened without
// a handle of ours, its entries), after syncing the backing file so that
// the time an fsync takes is a real one.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	fd, ok := handleFd(fh)
	if !ok {
		return n.syncDir()
	}
	// Under the lock, so that no write lands between the real fsync and
	// the bookkeeping and is taken for synced.
	f := n.fsys
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := syscall.Fsync(fd); err != nil {
		return fs.ToErrno(err)
	}
	f.stats.Fsyncs++
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	if fl := f.files[st.Ino]; fl != nil {
		f.syncedLocked(fl)
	}
	return 0
}

func (n *node) syncDir() syscall.Errno {
	f := n.fsys
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := os.Open(f.abs(n.rel()))
	if err != nil {
		return fs.ToErrno(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(d.Fd()), &st); err != nil {
		return fs.ToErrno(err)
	}
	f.stats.DirFsyncs++
	f.dirSyncedLocked(st.Ino)
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{inner: fh, n: n}, fuseFlags, 0
}

// dirHandle is an open directory whose fsync is recorded.
type dirHandle struct {
	inner fs.FileHandle
	n     *node
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.inner.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.inner.(fs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.inner.(fs.FileReleasedirer).Releasedir(ctx, flags)
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno { return d.n.syncDir() }

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.fsys
	f.mu.Lock()
	defer f.mu.Unlock()
	rel := filepath.Join(n.rel(), name)
	if _, err := os.Lstat(f.abs(rel)); err == nil {
		// An existing file opened with O_CREAT: at most a truncation.
		if flags&syscall.O_TRUNC != 0 {
			if errno := f.recordTruncLocked(rel); errno != 0 {
				return nil, nil, 0, errno
			}
		}
		ch, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
		return ch, wrapHandle(fh), fl, errno
	}
	ch, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return ch, fh, fl, errno
	}
	fh = wrapHandle(fh)
	if err := f.recordEntryLocked(&change{kind: created, to: rel}, n.rel()); err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	return ch, fh, fl, 0
}

// recordTruncLocked records the truncation to zero of the file at rel.
func (f *server) recordTruncLocked(rel string) syscall.Errno {
	tmp, err := os.OpenFile(f.abs(rel), os.O_RDWR, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer tmp.Close()
	fl, err := f.trackedLocked(int(tmp.Fd()))
	if err != nil {
		return fs.ToErrno(err)
	}
	clear(fl.dirty)
	return fs.ToErrno(f.recordDataLocked(fl, 0, -1, 0))
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		f := n.fsys
		f.mu.Lock()
		errno := f.recordTruncLocked(n.rel())
		f.mu.Unlock()
		if errno != 0 {
			return nil, 0, errno
		}
	}
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return wrapHandle(fh), fl, errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno != 0 {
		return ch, errno
	}
	if err := f.recordEntryLocked(&change{kind: created, to: filepath.Join(n.rel(), name)}, n.rel()); err != nil {
		return nil, fs.ToErrno(err)
	}
	return ch, 0
}

// remove moves an entry to the trash instead of deleting it, so that a cut
// can bring it back.
func (n *node) remove(name string) syscall.Errno {
	f := n.fsys
	f.mu.Lock()
	defer f.mu.Unlock()
	rel := filepath.Join(n.rel(), name)
	trashed := f.trashPathLocked()
	if err := os.Rename(f.abs(rel), trashed); err != nil {
		return fs.ToErrno(err)
	}
	if err := f.recordEntryLocked(&change{kind: removed, to: rel, trashed: trashed}, n.rel()); err != nil {
		return fs.ToErrno(err)
	}
	return 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno { return n.remove(name) }

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	// rmdir's contract: only an empty directory goes.
	ents, err := os.ReadDir(n.fsys.abs(filepath.Join(n.rel(), name)))
	if err != nil {
		return fs.ToErrno(err)
	}
	if len(ents) > 0 {
		return syscall.ENOTEMPTY
	}
	return n.remove(name)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || flags&^uint32(1) != 0 { // only RENAME_NOREPLACE (1) is modelled
		return syscall.ENOTSUP
	}
	f := n.fsys
	f.mu.Lock()
	defer f.mu.Unlock()
	from, to := filepath.Join(n.rel(), name), filepath.Join(np.rel(), newName)
	c := &change{kind: renamed, from: from, to: to}
	if _, err := os.Lstat(f.abs(from)); err != nil {
		return fs.ToErrno(err)
	}
	if _, err := os.Lstat(f.abs(to)); err == nil {
		if flags != 0 {
			return syscall.EEXIST
		}
		c.trashed = f.trashPathLocked()
		if err := os.Rename(f.abs(to), c.trashed); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := os.Rename(f.abs(from), f.abs(to)); err != nil {
		if c.trashed != "" {
			_ = os.Rename(c.trashed, f.abs(to))
		}
		return fs.ToErrno(err)
	}
	if err := f.recordEntryLocked(c, np.rel()); err != nil {
		return fs.ToErrno(err)
	}
	return 0
}

// CopyFileRange is refused, so the kernel falls back to reads and writes,
// which are recorded.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut, size, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOTSUP
}
