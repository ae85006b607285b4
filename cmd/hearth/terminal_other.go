//go:build !linux

package main

import "os"

// isTerminal reports whether f is a terminal, where prompting makes sense.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// withoutEcho runs fn; this platform's terminal echo is left as it is.
func withoutEcho(f *os.File, fn func()) { fn() }
