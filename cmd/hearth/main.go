// Command hearth is the agent flashed onto gateways: `hearth run` is the
// daemon, and the other subcommands are the field CLI.
//
// Exit codes: 0 ok, 1 the command failed, 2 usage error, 3 invalid config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/agent"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitConfig  = 3
	defaultPath = "/etc/hearth/hearth.yaml"
)

const usage = `hearth — home-battery gateway agent

Usage:
  hearth run [--config FILE] [--log-format text|json] [--log-level LEVEL]
  hearth config check FILE [--json]
  hearth version [--json]

Run 'hearth COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "config":
		switch {
		case len(args) >= 2 && args[1] == "check":
			return cmdConfigCheck(args[2:], stdout, stderr)
		case len(args) >= 2 && args[1] == "init":
			return cmdConfigInit(args[2:], stdout, stderr)
		}
		fmt.Fprintln(stderr, "usage: hearth config check FILE | hearth config init [flags]")
		return exitUsage
	case "cert":
		return cmdCert(args[1:], stdout, stderr)
	case "modbus":
		return cmdModbus(args[1:], stdout, stderr)
	case "version", "--version":
		return cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "hearth: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := newFlags("hearth run", stderr)
	path := fs.String("config", defaultPath, "config file")
	format := fs.String("log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	log, err := newLogger(stderr, *format, *level)
	if err != nil {
		fmt.Fprintln(stderr, "hearth run:", err)
		return exitUsage
	}
	cfg, err := agent.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		var ce agent.ConfigErrors
		if errors.As(err, &ce) {
			return exitConfig
		}
		return exitFailed
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	a, err := agent.New(cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		return exitFailed
	}
	if err := a.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return exitFailed
	}
	return exitOK
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func cmdConfigCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth config check", stderr)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(reorder(args)); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: hearth config check FILE [--json]")
		return exitUsage
	}
	path := fs.Arg(0)
	_, err := agent.LoadConfig(path)
	var ce agent.ConfigErrors
	if *asJSON {
		type item struct {
			Line int    `json:"line,omitempty"`
			Msg  string `json:"message"`
		}
		out := struct {
			File   string `json:"file"`
			Valid  bool   `json:"valid"`
			Errors []item `json:"errors"`
		}{File: path, Valid: err == nil, Errors: []item{}}
		if errors.As(err, &ce) {
			for _, e := range ce {
				out.Errors = append(out.Errors, item{Line: e.Line, Msg: e.Msg})
			}
		} else if err != nil {
			out.Errors = append(out.Errors, item{Msg: err.Error()})
		}
		writeJSON(stdout, out)
	} else if err == nil {
		fmt.Fprintf(stdout, "%s: OK\n", path)
	} else {
		fmt.Fprintln(stdout, err)
	}
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		if !*asJSON {
			fmt.Fprintf(stderr, "%d error(s) in %s\n", len(ce), path)
		}
		return exitConfig
	default:
		return exitFailed
	}
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth version", stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *asJSON {
		writeJSON(stdout, map[string]string{"version": hearth.Version})
	} else {
		fmt.Fprintln(stdout, "hearth", hearth.Version)
	}
	return exitOK
}

// reorder moves flags before positional arguments so that
// `hearth config check FILE --json` works as users type it.
func reorder(args []string) []string {
	var flags, pos []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
		} else {
			pos = append(pos, a)
		}
	}
	return append(flags, pos...)
}
