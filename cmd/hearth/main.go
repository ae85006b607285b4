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
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/agent"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
	exitConfig = 3
	// exitHeld: `hearth run` refused to start beside another agent that
	// holds its gateway id, diagnostics socket, a device link or its
	// data_dir (one agent per gateway).
	exitHeld    = 7
	defaultPath = "/etc/hearth/hearth.yaml"
	logLines    = 5000 // log lines the agent keeps for hearth dump
)

const usage = `hearth — home-battery gateway agent

Usage:
  hearth run [--config FILE] [--log-format text|json] [--log-level LEVEL]
  hearth status [--watch] [--wide]  agent, devices, safety, lease, uplink, buffer at a glance
  hearth points [DEVICE] [--watch]  latest values with age and quality
  hearth events [--since D] [--type T]  trips, setpoints, connectivity, gaps
  hearth buffer                  depth, oldest unsent, bytes
  hearth lease                   active setpoint lease, expiry and fallback
  hearth lease reset-version --confirm GATEWAY_ID   let the cloud number leases from 1 again
  hearth keys [reload]           setpoint keys in force; reload them from the config (as SIGHUP)
  hearth clock reset-floor --confirm GATEWAY_ID   set the floor under true time back to the build time
  hearth mode get                the mode the agent runs, the power it commands, and the lease behind them
  hearth mode set idle|auto --for D  a local lease for field work; mode clear ends it
  hearth mode set power -500W --for 2m  a small local test power (sign, wiring; at most ±1000 W)
  hearth commission              check a new installation and print its report
  hearth dump [--out FILE]       one support bundle: config (no secrets), status, events, logs
  hearth log-level LEVEL         change the running agent's log level
  hearth uplink reconnect        connect to the broker now (skip the boot delay or backoff)
  hearth device probe NAME       ask a device marked down again now, not at its next probe
  hearth modbus read|scan        raw Modbus reads and bus scans
  hearth config check FILE       validate a config; touches nothing
  hearth config init             write a config for this gateway
  hearth config hash-password    hash a password for the local page (http_password_hash)
  hearth cert request            make the gateway's key and certificate request
  hearth completion bash|zsh     a shell completion script
  hearth version

Commands that talk to the running agent take --socket PATH (default:
$HEARTH_SOCKET, then diag_socket in --config, then /run/hearth/hearth.sock)
and --json. Exit codes: 0 ok, 1 failed, 2 usage, 3 invalid config,
4 agent not running, 5 permission denied, 6 status degraded,
7 another agent holds this gateway (hearth run).

Run 'hearth COMMAND --help' for a command's flags; 'hearth help --man'
prints this as the hearth(1) manual page.
`

func main() {
	// The agent ignores SIGHUP from the moment it is loaded until its
	// handler (a key reload) is in place; every other command takes it
	// as it came.
	if len(os.Args) < 2 || os.Args[1] != "run" {
		restoreHangup()
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "config":
		switch {
		case len(args) >= 2 && args[1] == "check":
			return cmdConfigCheck(args[2:], stdout, stderr)
		case len(args) >= 2 && args[1] == "init":
			return cmdConfigInit(args[2:], stdout, stderr)
		case len(args) >= 2 && args[1] == "hash-password":
			return cmdHashPassword(args[2:], os.Stdin, stdout, stderr)
		}
		const configUsage = "usage: hearth config check FILE [--online] [--json] | hearth config init [flags] | hearth config hash-password"
		if isHelp(args[1:min(2, len(args))]) {
			fmt.Fprintln(stdout, configUsage)
			return exitOK
		}
		fmt.Fprintln(stderr, configUsage)
		return exitUsage
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "points":
		return cmdPoints(args[1:], stdout, stderr)
	case "events":
		return cmdEvents(args[1:], stdout, stderr)
	case "buffer":
		return cmdBuffer(args[1:], stdout, stderr)
	case "lease":
		return cmdLease(args[1:], stdout, stderr)
	case "keys":
		return cmdKeys(args[1:], stdout, stderr)
	case "clock":
		return cmdClock(args[1:], stdout, stderr)
	case "mode":
		return cmdMode(args[1:], stdout, stderr)
	case "log-level":
		return cmdLogLevel(args[1:], stdout, stderr)
	case "cert":
		return cmdCert(args[1:], stdout, stderr)
	case "modbus":
		return cmdModbus(args[1:], stdout, stderr)
	case "uplink":
		return cmdUplink(args[1:], stdout, stderr)
	case "device":
		return cmdDevice(args[1:], stdout, stderr)
	case "commission":
		return cmdCommission(args[1:], stdout, stderr)
	case "dump":
		return cmdDump(args[1:], stdout, stderr)
	case "completion":
		return cmdCompletion(args[1:], stdout, stderr)
	case "version", "--version":
		return cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) == 2 && args[1] == "--man" {
			manPage(stdout, hearth.Version)
			return exitOK
		}
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

// isHelp reports whether args ask for help (-h, -help, --help) before any
// "--".
func isHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// parseArgs parses args with fs, flags wherever they stand among the
// positional arguments (so `hearth points battery --json` works as users
// type it), and returns the positional arguments. When it returns ok
// false, the command ends at once with code: 0 after --help, whose text
// goes to stdout, or 2 (usage) after a bad flag, which flag has reported
// on stderr.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) (pos []string, code int, ok bool) {
	if isHelp(args) {
		fs.SetOutput(stdout)
		fs.Usage()
		return nil, exitOK, false
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, exitUsage, false
	}
	return pos, exitOK, true
}

// parseNoArgs is parseArgs for a command that takes no positional
// argument: one given is a usage error, named on stderr.
func parseNoArgs(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code, false
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (see %s --help)\n", fs.Name(), pos[0], fs.Name())
		return exitUsage, false
	}
	return exitOK, true
}

// subcommand checks that args start with word, the one subcommand of a
// command (as `hearth uplink reconnect`): a --help there prints usage and
// ends the command (exit 0); anything else is a usage error.
func subcommand(args []string, word, usage string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) > 0 && isHelp(args[:1]) {
		fmt.Fprintln(stdout, usage)
		return exitOK, false
	}
	if len(args) == 0 || args[0] != word {
		fmt.Fprintln(stderr, usage)
		return exitUsage, false
	}
	return exitOK, true
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	// The signals are caught before anything else happens: without a
	// handler, SIGHUP (a key reload) kills a Go program, and the agent
	// may take a while to start (config, buffer, devices). A SIGHUP
	// that comes before the agent exists is served once it does; a
	// SIGTERM ends it as soon as it runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fs := newFlags("hearth run", stderr)
	path := fs.String("config", defaultPath, "config file")
	format := fs.String("log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	lv := new(slog.LevelVar)
	// The last lines are kept for `hearth dump` too: a gateway may have
	// no journal, or one that has rotated them away.
	ring := diag.NewLogRing(logLines)
	log, err := newLogger(io.MultiWriter(stderr, ring), *format, *level, lv)
	if err != nil {
		fmt.Fprintln(stderr, "hearth run:", err)
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, explainConfigError(*path, err))
		var ce config.Errors
		if errors.As(err, &ce) {
			return exitConfig
		}
		return exitFailed
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + warningLine(w))
	}
	if err := checkDataDir(cfg.DataDir); err != nil {
		fmt.Fprintln(stderr, "hearth run:", err)
		return exitFailed
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		if agent.IsAnotherAgent(err) {
			return exitHeld
		}
		return exitFailed
	}
	a.UseLogLevel(lv)
	a.UseLogRing(ring)
	// SIGHUP reloads the setpoint keys (a rotation or a revocation)
	// without a restart, which would interrupt control.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if _, err := a.ReloadKeys(); err != nil {
					log.Error("SIGHUP: reload keys", "err", err)
				}
			}
		}
	}()
	if err := a.Run(ctx); err != nil {
		log.Error("run", "err", err)
		return exitFailed
	}
	return exitOK
}

// explainConfigError adds what to do to a config file that cannot be
// read; other errors (the file's own, on their lines) say it already.
func explainConfigError(path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w\n  no config at %s: write one with `hearth config init --out %s`, or pass --config FILE", err, path, path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w\n  %s is not readable by uid %d: run as root or the hearth user (sudo -u hearth …), or check its mode (0640 root:hearth)", err, path, os.Geteuid())
	}
	return err
}

// checkDataDir makes sure the agent can write in dir (creating it if need
// be) before anything opens the buffer there, and otherwise says why and
// what to do: SQLite itself would only say "unable to open database file".
func checkDataDir(dir string) error {
	err := os.MkdirAll(dir, 0o750)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, ".hearth-write-check-*"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return nil
		}
	}
	return dataDirError(dir, err)
}

// dataDirError explains why data_dir cannot be written.
func dataDirError(dir string, err error) error {
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("data_dir %s is on a read-only file system (%v): remount it read-write, or set data_dir to a writable folder such as /var/lib/hearth", dir, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("data_dir %s is not writable by uid %d (%v): give it to the user the agent runs as (sudo chown -R hearth:hearth %s), or set data_dir to a folder it owns", dir, os.Geteuid(), err, dir)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("data_dir %s: no space left on the device (%v): free some, or set data_dir on another file system", dir, err)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("data_dir %s: a file is in the way of the folder (%v): move it, or set data_dir elsewhere", dir, err)
	}
	return fmt.Errorf("data_dir %s cannot be written: %w", dir, err)
}

func newLogger(w io.Writer, format, level string, lv *slog.LevelVar) (*slog.Logger, error) {
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

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth version", stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	built, from := agent.BuildStamp()
	if *asJSON {
		v := map[string]string{"version": hearth.Version, "go": runtime.Version(), "build_date_from": from}
		if !built.IsZero() {
			v["build_date"] = built.Format(time.RFC3339)
		}
		writeJSON(stdout, v)
	} else if built.IsZero() {
		fmt.Fprintln(stdout, "hearth", hearth.Version, "(build date unknown)")
	} else {
		fmt.Fprintf(stdout, "hearth %s (built %s)\n", hearth.Version, built.Format("2006-01-02 15:04 UTC"))
	}
	return exitOK
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments, so `hearth points battery --json` works as users type it, and
// returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		// A negative number (-500W) is an argument, not a flag: parse
		// the flags before it, then take it as it is.
		i := slices.IndexFunc(args, negativeNumber)
		head := args
		if i >= 0 {
			head = args[:i]
		}
		if err := fs.Parse(head); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			if i < 0 {
				return pos, nil
			}
			pos = append(pos, args[i])
			args = args[i+1:]
			continue
		}
		pos = append(pos, fs.Arg(0))
		args = append(fs.Args()[1:], args[len(head):]...)
	}
}

// negativeNumber reports whether a looks like -500, -1.5kW or -.5.
func negativeNumber(a string) bool {
	return len(a) > 1 && a[0] == '-' && (a[1] >= '0' && a[1] <= '9' || a[1] == '.')
}
