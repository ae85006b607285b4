//go:build !(linux && cgo)

package main

// restoreHangup has nothing to restore: without cgo, SIGHUP keeps its
// inherited disposition until `hearth run` installs its handler.
func restoreHangup() {}
