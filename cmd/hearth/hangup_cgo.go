//go:build linux && cgo

package main

/*
#include <signal.h>
#include <string.h>

// hearth_hup_before is SIGHUP's disposition as the process inherited it.
static struct sigaction hearth_hup_before;

// hearth_ignore_hangup runs as the program is loaded, before the Go
// runtime starts: from there until the agent has its SIGHUP handler
// (package initialisation, config, buffer, devices), a SIGHUP would
// otherwise kill it (the Go runtime's default for an unhandled SIGHUP).
// The runtime keeps an inherited SIG_IGN, and signal.Notify replaces it.
__attribute__((constructor)) static void hearth_ignore_hangup(void) {
	struct sigaction ign;
	memset(&ign, 0, sizeof ign);
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	sigaction(SIGHUP, &ign, &hearth_hup_before);
}

static void hearth_restore_hangup(void) {
	sigaction(SIGHUP, &hearth_hup_before, NULL);
}
*/
import "C"

// restoreHangup gives SIGHUP back the disposition the process inherited,
// for the commands other than `hearth run`: a CLI command in a terminal
// that hangs up ends as any command does.
func restoreHangup() { C.hearth_restore_hangup() }
