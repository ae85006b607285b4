package diag

import (
	"net"
	"os"
	"syscall"
	"time"
)

// SocketPeer dials the Unix socket at path and reports whether a process
// accepts on it (live), and that process's pid (0 when the system does
// not say). A socket file nobody accepts on (its agent is gone) is not
// live: it is stale, and may be removed.
func SocketPeer(path string) (pid int, live bool) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	return peerPID(c.(*net.UnixConn)), true
}

// inode returns the inode of the file at path, 0 if there is none.
func inode(path string) uint64 {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
