//go:build !linux

package main

import "syscall"

// stopWithParent has no kernel support outside Linux: the demo stops its
// agent itself on every way out it controls.
func stopWithParent() *syscall.SysProcAttr { return nil }
