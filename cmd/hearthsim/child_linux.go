package main

import "syscall"

// stopWithParent makes the kernel send the child SIGTERM when this process
// dies, so that a demo killed outright does not leave its agent running.
func stopWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
