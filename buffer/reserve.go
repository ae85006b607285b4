package buffer

import (
	"errors"
	"os"
	"syscall"
)

// A reserve file beside the database holds back a little of the disk for
// the moment it fills. SQLite needs room to do anything at all, even to
// open a database or to delete rows (its shared-memory index, the WAL):
// without the reserve, a disk filled by something else would stop the
// agent from starting and the buffer from ever draining.
const reserveBytes = 1 << 20

func reservePath(db string) string { return db + ".reserve" }

// releaseReserve deletes the reserve file, giving its room to SQLite. It
// reports whether there was one.
func releaseReserve(db string) bool {
	return os.Remove(reservePath(db)) == nil
}

// keepReserve creates the reserve file when it is missing and the disk has
// room for it and as much again, so taking it never fills the disk.
func keepReserve(db string, size int64) {
	path := reservePath(db)
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(pathDir(db), &fs); err != nil || int64(fs.Bavail)*int64(fs.Bsize) < 2*size {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	// Written, not just sized: a sparse file would hold back nothing.
	buf := make([]byte, 64<<10)
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), left)]); err != nil {
			f.Close()
			os.Remove(path)
			return
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
	}
}

func pathDir(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:max(i, 1)]
		}
	}
	return "."
}

// isNoSpace reports whether err says the disk is full.
func isNoSpace(err error) bool {
	return err != nil && (errors.Is(err, syscall.ENOSPC) || isDiskFull(err))
}
