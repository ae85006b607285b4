// Command hearthsim is the lab and demo tool: a simulated battery and
// inverter speaking SunSpec over Modbus, an embedded MQTT broker, and a
// cloud-side console. Its usage text below lists every subcommand.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/broker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `hearthsim — lab and demo tool for hearth

Usage:
  hearthsim [--modbus ADDR] [--rtu DEV] [--mqtt ADDR] [flags]
                        serve a simulated battery+inverter (SunSpec over Modbus
                        TCP and/or RTU) and/or an embedded MQTT broker
  hearthsim demo [--agent PATH] [--keep]
                        simulator, broker and agent on free loopback ports,
                        live telemetry, and a signed demo lease; Ctrl-C stops
  hearthsim watch --broker URL [--gateway ID|+]
                        print what gateways publish
  hearthsim cloud keygen|send|watch
                        the operator's side: make a setpoint key, send a
                        (signed) lease and print its ack, watch gateways
  hearthsim fleet [--gateways N] [--broker URL]
                        run N whole agents against one broker and report
  hearthsim version

Run 'hearthsim COMMAND --help' for a command's flags. The server's flags:
`

// parse parses a (sub)command's flags. When it returns ok false, the
// command ends at once with code: 0 after --help, whose text goes to
// stdout, or 2 after a bad flag (reported on stderr by flag) or an
// unexpected positional argument when none are taken (noArgs).
func parse(fs *flag.FlagSet, args []string, noArgs bool, stdout, stderr io.Writer) (code int, ok bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0, false
		}
	}
	if err := fs.Parse(args); err != nil {
		return 2, false
	}
	if noArgs && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (see %s --help)\n", fs.Name(), fs.Arg(0), fs.Name())
		return 2, false
	}
	return 0, true
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return cmdDemo(ctx, args[1:], stdout, stderr)
		case "watch":
			return cmdWatch(ctx, args[1:], stdout, stderr)
		case "fleet":
			return cmdFleet(ctx, args[1:], stdout, stderr)
		case "cloud":
			return cmdCloud(ctx, args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, "hearthsim", hearth.Version)
			return 0
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return cmdServe(ctx, []string{"--help"}, stdout, stderr)
		}
	}
	return cmdServe(ctx, args, stdout, stderr)
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hearthsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modbusAddr := fs.String("modbus", "", "serve the simulated battery+inverter over Modbus TCP on this address (e.g. 127.0.0.1:5020)")
	rtuPath := fs.String("rtu", "", "serve Modbus RTU on this serial device or pty (e.g. /dev/pts/3)")
	baud := fs.Int("baud", 9600, "baud rate for --rtu (8N1)")
	faultSpec := fs.String("fault", "", "inject a fault from the start: comma-separated latency=D, noresponse, exception=N, corrupt, drop, requests=N")
	controlPath := fs.String("control", "", "serve the control line protocol on this Unix socket (commands: fault SPEC, soc PCT, pv W, load W, temp C, control local|remote, cellv MIN MAX, celltemp MIN MAX, raw MODEL POINT VALUE, raw clear, refuse MODEL POINT, refuse clear, sf MODEL POINT SF, state, writes [N])")
	refuse := fs.String("refuse", "", "answer reads and writes touching these points with exception 2 (illegal data address): comma-separated MODEL.POINT, e.g. 103.TmpOt")
	meter := fs.Bool("meter", false, "serve a SunSpec meter (model 203) at the grid connection after model 802: W positive importing")
	meterExport := fs.Bool("meter-export-positive", false, "with --meter: sign the meter's W positive exporting instead")
	cellTemps := fs.Bool("cell-temps", false, "serve SunSpec model 803 (lithium-ion bank, module temperatures) after model 802")
	mqttAddr := fs.String("mqtt", "", "run an embedded MQTT broker on this address (e.g. 127.0.0.1:1883)")
	unit := fs.Uint("unit", 0, "Modbus unit id, 1 to 247 (default: the profile's own: "+profileUnits()+")")
	soc := fs.Float64("soc", 60, "initial state of charge (%)")
	serial := fs.String("serial", "SIM0001", "serial number reported in SunSpec model 1")
	profile := fs.String("profile", "sunspec", "the device's register map: sunspec, fronius_gen24 (SunSpec with model 124 read as a power window), or a vendor's own map ("+strings.Join(sim.VendorProfiles(), ", ")+"); a vendor map is served over --modbus only and takes only --"+strings.Join(vendorFlags, ", --")+"; any other flag is refused with it")
	load := fs.Float64("load", 300, "with a vendor --profile: the constant house load (W)")
	pv := fs.Float64("pv", 0, "with a vendor --profile: the constant PV production (W)")
	quirk := fs.String("quirk", "", "with a vendor --profile: serve a firmware behaviour users report instead of the documented one (sma_storage: standby, the complete set taken and the battery left at 0 W)")
	settings := map[uint16]uint16{}
	fs.Func("setting", "with a vendor --profile: a holding register the installer set, ADDR=VALUE (e.g. 0xE004=4); repeatable", func(v string) error {
		a, x, ok := strings.Cut(v, "=")
		addr, err1 := strconv.ParseUint(a, 0, 16)
		val, err2 := strconv.ParseUint(x, 0, 16)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("want ADDR=VALUE, 16-bit each, got %q", v)
		}
		settings[uint16(addr)] = uint16(val)
		return nil
	})
	fs.Usage = fs.PrintDefaults
	if code, ok := parse(fs, args, true, stdout, stderr); !ok {
		return code
	}
	if errs := checkServeFlags(fs, *profile); len(errs) > 0 {
		for _, err := range errs {
			fmt.Fprintln(stderr, "hearthsim:", err)
		}
		return 2
	}
	if !(*soc >= 0 && *soc <= 100) {
		fmt.Fprintf(stderr, "hearthsim: --soc %v: a state of charge is 0 to 100 %%\n", *soc)
		return 2
	}
	// The simulators read an InitialSoC of 0 as their default: an empty
	// battery asked for is set once they run.
	empty := *soc == 0
	if vendorProfile(*profile) {
		return serveVendor(ctx, sim.VendorConfig{Profile: *profile, UnitID: uint8(*unit), InitialSoC: *soc, LoadW: *load, PVW: *pv,
			Settings: settings, Quirk: *quirk}, empty, *modbusAddr, stdout, stderr)
	}
	if *unit == 0 {
		*unit = 1
	}
	if *modbusAddr == "" && *mqttAddr == "" && *rtuPath == "" {
		fmt.Fprintf(stderr, "hearthsim: give --modbus ADDR, --rtu DEVICE and/or --mqtt ADDR, or a subcommand\n\n%s", usage)
		fs.PrintDefaults()
		return 2
	}
	fault, err := sim.ParseFault(*faultSpec)
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim: --fault:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *mqttAddr != "" {
		b, err := broker.Start(ctx, *mqttAddr, log.With("component", "broker"))
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim:", err)
			return 1
		}
		defer b.Close()
		fmt.Fprintf(stdout, "broker listening on tcp://%s\n", b.Addr())
	}
	errc := make(chan error, 3)
	// One simulated device, whichever fronts it serves.
	s := sim.New(sim.Config{UnitID: uint8(*unit), InitialSoC: *soc, Serial: *serial, Logger: log.With("component", "sim"),
		Meter: *meter, MeterExportPositive: *meterExport, CellTemps: *cellTemps, PowerWindow: *profile == "fronius_gen24"})
	s.SetFault(fault)
	if empty {
		s.SetSoC(0)
	}
	for item := range strings.SplitSeq(*refuse, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		model, point, _ := strings.Cut(item, ".")
		id, err := strconv.ParseUint(model, 10, 16)
		if err == nil {
			err = s.Refuse(uint16(id), point)
		}
		if err != nil {
			fmt.Fprintf(stderr, "hearthsim: --refuse %s: %v (want MODEL.POINT, e.g. 103.TmpOt)\n", item, err)
			return 2
		}
	}
	if *modbusAddr != "" {
		ln, err := net.Listen("tcp", *modbusAddr)
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim:", err)
			return 1
		}
		fmt.Fprintf(stdout, "simulator serving Modbus TCP on %s (unit %d)\n", ln.Addr(), *unit)
		go func() { errc <- s.ServeTCP(ctx, ln) }()
	}
	if *rtuPath != "" {
		fmt.Fprintf(stdout, "simulator serving Modbus RTU on %s at %d baud (unit %d)\n", *rtuPath, *baud, *unit)
		go func() { errc <- sim.ServeRTUDevice(ctx, *rtuPath, *baud, s) }()
	}
	if *controlPath != "" {
		if fi, err := os.Lstat(*controlPath); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(*controlPath) // a socket left by an earlier run
		}
		ln, err := net.Listen("unix", *controlPath)
		if err != nil {
			fmt.Fprintln(stderr, "hearthsim:", err)
			return 1
		}
		defer os.Remove(*controlPath)
		fmt.Fprintf(stdout, "control protocol on unix:%s\n", *controlPath)
		go func() { errc <- sim.ServeControlListener(ctx, ln, s) }()
	}
	select {
	case <-ctx.Done():
		return 0
	case err := <-errc:
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(stderr, "hearthsim:", err)
			return 1
		}
		return 0
	}
}

// vendorFlags are the server's flags a vendor map takes; every other flag
// is the SunSpec simulator's (profiles sunspec and fronius_gen24). The
// flags only a vendor map takes are vendorOnlyFlags.
var (
	vendorFlags     = []string{"profile", "modbus", "unit", "soc", "load", "pv", "setting", "quirk"}
	vendorOnlyFlags = []string{"load", "pv", "setting", "quirk"}
)

// vendorProfile reports whether profile names a vendor's own map rather
// than the SunSpec simulator.
func vendorProfile(profile string) bool {
	return profile != "sunspec" && profile != "fronius_gen24"
}

// profileUnits lists each profile's own unit id, for --unit's help.
func profileUnits() string {
	out := []string{"1 for sunspec, fronius_gen24"}
	for _, p := range sim.VendorProfiles() {
		u, _ := sim.VendorUnit(p)
		out = append(out, fmt.Sprintf("%d for %s", u, p))
	}
	return strings.Join(out, ", ")
}

// checkServeFlags checks the server's flags given in fs against profile:
// the profile must be one served, --unit a unit id (1 to 247), and every
// flag given one the profile takes (vendorFlags). It returns an error for
// each flag that does not apply, naming it and the profile.
func checkServeFlags(fs *flag.FlagSet, profile string) []error {
	if _, ok := sim.VendorUnit(profile); vendorProfile(profile) && !ok {
		return []error{fmt.Errorf("--profile %s: no such profile (have sunspec, fronius_gen24, %s)", profile, strings.Join(sim.VendorProfiles(), ", "))}
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		switch {
		case f.Name == "unit":
			if u, _ := strconv.ParseUint(f.Value.String(), 10, 64); u < 1 || u > 247 {
				errs = append(errs, fmt.Errorf("--unit %s: a Modbus unit id is 1 to 247", f.Value))
			}
		case vendorProfile(profile) && !slices.Contains(vendorFlags, f.Name):
			errs = append(errs, fmt.Errorf("--%s does not apply to --profile %s: a vendor map is served over --modbus only and takes only --%s",
				f.Name, profile, strings.Join(vendorFlags, ", --")))
		case !vendorProfile(profile) && slices.Contains(vendorOnlyFlags, f.Name):
			errs = append(errs, fmt.Errorf("--%s does not apply to --profile %s: it sets a vendor map's simulator (the SunSpec simulator's load and PV follow its daily curve; --control sets them)",
				f.Name, profile))
		}
	})
	return errs
}

// serveVendor serves a vendor's own map over Modbus TCP until ctx ends.
func serveVendor(ctx context.Context, cfg sim.VendorConfig, empty bool, addr string, stdout, stderr io.Writer) int {
	if addr == "" {
		fmt.Fprintf(stderr, "hearthsim: --profile %s serves Modbus TCP only: give --modbus ADDR\n", cfg.Profile)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil)).With("component", "sim")
	v, err := sim.NewVendor(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim:", err)
		return 2
	}
	if empty {
		v.SetSoC(0)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(stderr, "hearthsim:", err)
		return 1
	}
	fmt.Fprintf(stdout, "simulator (%s) serving Modbus TCP on %s (unit %d)\n", cfg.Profile, ln.Addr(), v.Unit())
	if err := v.ServeTCP(ctx, ln); err != nil {
		fmt.Fprintln(stderr, "hearthsim:", err)
		return 1
	}
	return 0
}
