package diag

import (
	"net"
	"syscall"
)

// peerPID returns the pid of the process at the other end of a Unix
// socket connection (SO_PEERCRED), or 0 when the kernel does not say.
func peerPID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
