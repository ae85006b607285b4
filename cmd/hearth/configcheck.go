package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/hearth-energy/hearth/config"
)

// checkItem is one error or warning of `hearth config check --json`.
type checkItem struct {
	Line int    `json:"line,omitempty"`
	Msg  string `json:"message"`
}

// checkResult is `hearth config check --json`.
type checkResult struct {
	File     string      `json:"file"`
	Valid    bool        `json:"valid"`
	Errors   []checkItem `json:"errors"`
	Warnings []checkItem `json:"warnings"`
	// FilesMissing: with --online, the errors are only files the config
	// names that cannot be read (certificates not issued yet), and the
	// devices and broker were probed all the same.
	FilesMissing bool `json:"files_missing,omitempty"`
	// Online is what --online found of the devices and the broker.
	Online *onlineResult `json:"online,omitempty"`
}

// cmdConfigCheck is `hearth config check FILE`: every error with its line
// (exit 3), and the risky settings as warnings with theirs (exit 0, or 3
// with --strict). It reads the file and the files it names, nothing else.
func cmdConfigCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth config check", stderr)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	strict := fs.Bool("strict", false, "fail (exit 3) on warnings too")
	online := fs.Bool("online", false, "also probe each device (one read-only identification) and the broker (TLS, login, subscribe and publish on the gateway's own topics); exit 1 if any fails")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: hearth config check FILE [--online] [--strict] [--json]")
		return exitUsage
	}
	path := pos[0]
	cfg, err := config.Load(path)
	res := checkResult{File: path, Valid: err == nil, Errors: []checkItem{}, Warnings: []checkItem{}}
	var ce config.Errors
	switch {
	case errors.As(err, &ce):
		for _, e := range ce {
			res.Errors = append(res.Errors, checkItem{Line: e.Line, Msg: e.Msg})
		}
	case err != nil:
		res.Errors = append(res.Errors, checkItem{Msg: explainConfigError(path, err).Error()})
	default:
		for _, w := range cfg.Warnings() {
			res.Warnings = append(res.Warnings, checkItem{Line: w.Line, Msg: w.Msg})
		}
	}
	// Certificate files not there yet (a request pending) are errors of
	// the config as the agent would load it, but need not stop the probes:
	// a config that is valid apart from its files is probed as far as it
	// can be, and the files are reported as their own finding.
	probeCfg := cfg
	filesOnly := false
	if *online && errors.As(err, &ce) {
		if c, rerr := config.Read(path); rerr == nil {
			probeCfg, filesOnly = c, true
			res.FilesMissing = true
		}
	}
	if *online && probeCfg != nil {
		ctx, cancel := signalContext()
		defer cancel()
		on := checkOnline(ctx, probeCfg)
		res.Online = &on
	}
	if *asJSON {
		writeJSON(stdout, res)
	} else {
		switch {
		case filesOnly:
			fmt.Fprintln(stdout, explainConfigError(path, err))
			fmt.Fprintf(stdout, "%s: valid but for the files above (normal while the certificate request is pending); probing what can be probed\n", path)
			renderOnline(stdout, *res.Online)
		case err != nil:
			fmt.Fprintln(stdout, explainConfigError(path, err))
		default:
			for _, w := range cfg.Warnings() {
				fmt.Fprintln(stdout, warningLine(w))
			}
			line := path + ": OK"
			if n := len(res.Warnings); n > 0 {
				line += fmt.Sprintf(" (%d warning%s)", n, plural(n))
			}
			fmt.Fprintln(stdout, line)
			if res.Online != nil {
				renderOnline(stdout, *res.Online)
			}
		}
	}
	switch {
	case errors.As(err, &ce):
		if !*asJSON {
			fmt.Fprintf(stderr, "%d error(s) in %s\n", len(ce), path)
		}
		return exitConfig
	case err != nil:
		return exitFailed
	case res.Online != nil && !res.Online.OK:
		return exitFailed
	case *strict && len(res.Warnings) > 0:
		if !*asJSON {
			fmt.Fprintf(stderr, "--strict: %d warning(s) in %s\n", len(res.Warnings), path)
		}
		return exitConfig
	}
	return exitOK
}

// warningLine is a warning as the CLI and the agent's log print it:
// FILE:LINE: warning: key: message.
func warningLine(w config.Error) string {
	if w.Line > 0 {
		return fmt.Sprintf("%s:%d: warning: %s", w.File, w.Line, w.Msg)
	}
	return fmt.Sprintf("%s: warning: %s", w.File, w.Msg)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
