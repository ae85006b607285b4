package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers"
)

const modbusUsage = `usage:
  hearth modbus read [--device NAME | --address A] [--unit N] --start ADDR --count N
                     [--table holding|input] [--json]
  hearth modbus scan [--device NAME | --address A] [--units 1-247] [--timeout D] [--json]
  hearth modbus read --direct --address HOST:PORT|/dev/ttyX [--transport tcp|rtu|rtu-over-tcp]
                     [--baud N] [--parity N|E|O] [--stop-bits 1|2] --unit N --start ADDR --count N
                     [--table holding|input] [--timeout D] [--json]
  hearth modbus scan --direct --address HOST:PORT|/dev/ttyX [--transport …] [--baud N]
                     [--units 1-247] [--timeout D] [--all] [--json]

Without --direct the request goes through the running agent (--socket,
--config as for hearth status), queued on the owner of the link of the
device named by --device, or of the configured device at --address; the
unit defaults to that device's. --direct opens the port itself: stop the
agent first if it owns the port.

A direct scan prints each unit as it answers. On a Modbus TCP device
(--transport tcp) it stops at the first unit that answers, as such a
device is one unit; --all asks the remaining units too (a TCP gateway to
a serial bus). Each unit is given --timeout, 300ms on a serial bus and
100ms on TCP unless set. --json prints one document when the scan ends.
`

// cmdModbus is `hearth modbus read|scan`.
func cmdModbus(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, modbusUsage)
		return exitUsage
	}
	switch args[0] {
	case "read":
		return cmdModbusRead(args[1:], stdout, stderr)
	case "scan":
		return cmdModbusScan(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, modbusUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "hearth modbus: unknown subcommand %q\n%s", args[0], modbusUsage)
	return exitUsage
}

// linkFlags are the flags that say how to reach a bus.
type linkFlags struct {
	direct    *bool
	address   *string
	transport *string
	baud      *int
	parity    *string
	stopBits  *int
	timeout   *time.Duration
	asJSON    *bool
	// Through the agent.
	device *string
	diag   *diagFlags
}

func addLinkFlags(fs *flag.FlagSet) linkFlags {
	return linkFlags{
		direct:    fs.Bool("direct", false, "open the port directly instead of going through the running agent"),
		address:   fs.String("address", "", "HOST:PORT for tcp and rtu-over-tcp, or a serial device such as /dev/ttyUSB0"),
		transport: fs.String("transport", "", "tcp, rtu or rtu-over-tcp (default: rtu for /dev paths, else tcp)"),
		baud:      fs.Int("baud", 9600, "serial baud rate (rtu)"),
		parity:    fs.String("parity", "N", "serial parity N, E or O (rtu)"),
		stopBits:  fs.Int("stop-bits", 1, "serial stop bits 1 or 2 (rtu)"),
		timeout:   fs.Duration("timeout", time.Second, "timeout of each request"),
		asJSON:    fs.Bool("json", false, "print the result as JSON"),
		device:    fs.String("device", "", "without --direct: the configured device whose link to use"),
		diag:      addSocketFlags(fs),
	}
}

// addSocketFlags registers --socket and --config, which find the agent.
func addSocketFlags(fs *flag.FlagSet) *diagFlags {
	f := &diagFlags{}
	fs.StringVar(&f.socket, "socket", "", "diagnostics socket (default: $HEARTH_SOCKET, then diag_socket in --config, then "+defaultSocket+")")
	fs.StringVar(&f.config, "config", defaultPath, "config file to read diag_socket from")
	return f
}

// target is the link named by the flags, for the agent.
func (l linkFlags) target() diag.ModbusTarget {
	return diag.ModbusTarget{Device: *l.device, Address: *l.address, Transport: *l.transport}
}

// open checks the link flags and opens the bus.
func (l linkFlags) open(name string, stderr io.Writer) (*drivers.Bus, int) {
	if *l.device != "" {
		fmt.Fprintf(stderr, "%s: --device names a device of the running agent: it does not go with --direct\n", name)
		return nil, exitUsage
	}
	if *l.address == "" {
		fmt.Fprintf(stderr, "%s: --address is required\n", name)
		return nil, exitUsage
	}
	tr := l.transportName()
	if *l.timeout <= 0 {
		fmt.Fprintf(stderr, "%s: --timeout must be positive\n", name)
		return nil, exitUsage
	}
	bus, err := drivers.OpenBus(drivers.LinkConfig{
		Transport: tr, Address: *l.address, Baud: *l.baud, Parity: *l.parity, StopBits: *l.stopBits,
		Timeout: *l.timeout,
		// A field read reports what the bus does, untouched by the
		// agent's retry and back-off policy.
		DownAfter: 1 << 30,
	})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, exitUsage
	}
	return bus, exitOK
}

// transportName is --transport, or the one an address implies: rtu for
// a /dev path, else tcp.
func (l linkFlags) transportName() string {
	if *l.transport != "" {
		return *l.transport
	}
	if strings.HasPrefix(*l.address, "/") {
		return drivers.TransportRTU
	}
	return drivers.TransportTCP
}

// explain prints a failed direct request's error and, on a line of its
// own, what to check next.
func (l linkFlags) explain(stderr io.Writer, name string, err error, unit uint8) {
	_, hint := diag.DeviceCause(err, l.transportName(), *l.address, int(unit))
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	if hint != "" && hint != err.Error() {
		fmt.Fprintf(stderr, "  %s\n", hint)
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt)
}

// registerJSON is one register in `hearth modbus read --json`.
type registerJSON struct {
	Address uint16 `json:"address"`
	Value   uint16 `json:"value"`
	Hex     string `json:"hex"`
}

func cmdModbusRead(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth modbus read", stderr)
	lf := addLinkFlags(fs)
	unit := fs.Uint("unit", 1, "unit id (0..247)")
	start := fs.Uint("start", 0, "first register address (0..65535, as on the wire)")
	count := fs.Uint("count", 1, "number of registers (1..125)")
	table := fs.String("table", "holding", "holding or input")
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	switch {
	case *unit > 247:
		fmt.Fprintln(stderr, "hearth modbus read: --unit must be 0..247")
		return exitUsage
	case *count < 1 || *count > drivers.MaxReadRegisters:
		fmt.Fprintf(stderr, "hearth modbus read: --count must be 1..%d\n", drivers.MaxReadRegisters)
		return exitUsage
	case *start+*count > 0x10000:
		fmt.Fprintln(stderr, "hearth modbus read: --start + --count runs past register 65535")
		return exitUsage
	case *table != string(drivers.Holding) && *table != string(drivers.Input):
		fmt.Fprintln(stderr, "hearth modbus read: --table must be holding or input")
		return exitUsage
	}
	var regs []uint16
	var link *diag.LinkReport
	if *lf.direct {
		bus, code := lf.open("hearth modbus read", stderr)
		if bus == nil {
			return code
		}
		defer bus.Close()
		ctx, cancel := signalContext()
		defer cancel()
		var err error
		regs, err = bus.Read(ctx, uint8(*unit), drivers.Table(*table), uint16(*start), uint16(*count))
		if err != nil {
			lf.explain(stderr, "hearth modbus read", err, uint8(*unit))
			return exitFailed
		}
	} else {
		req := diag.ModbusReadRequest{ModbusTarget: lf.target(), Table: *table, Start: int(*start), Count: int(*count)}
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "unit" {
				u := int(*unit)
				req.Unit = &u
			}
		})
		var res diag.ModbusReadResult
		if err := diag.NewClient(lf.diag.socketPath()).Do("POST", "/modbus/read", nil, req, &res); err != nil {
			return fail(stderr, "modbus read", err)
		}
		*unit = uint(res.Unit)
		link = &res.Link
		for _, r := range res.Registers {
			regs = append(regs, r.Value)
		}
	}
	if *lf.asJSON {
		out := struct {
			Unit      uint             `json:"unit"`
			Table     string           `json:"table"`
			Start     uint             `json:"start"`
			Registers []registerJSON   `json:"registers"`
			Link      *diag.LinkReport `json:"link,omitempty"` // through the agent: its link's counters after the read
		}{Unit: *unit, Table: *table, Start: *start, Link: link}
		for i, r := range regs {
			out.Registers = append(out.Registers, registerJSON{Address: uint16(*start) + uint16(i), Value: r, Hex: fmt.Sprintf("0x%04x", r)})
		}
		writeJSON(stdout, out)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ADDRESS\tDEC\tHEX\t")
	for i, r := range regs {
		fmt.Fprintf(tw, "%d\t%d\t0x%04x\t\n", uint16(*start)+uint16(i), r, r)
	}
	tw.Flush()
	return exitOK
}

// parseUnits parses a unit list such as "1-247" or "1,3,10-12".
func parseUnits(s string) ([]uint8, error) {
	var units []uint8
	seen := map[uint64]bool{}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(lo, 10, 8)
		if err != nil {
			return nil, fmt.Errorf("unit %q: want a number 0..247", lo)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 8); err != nil {
				return nil, fmt.Errorf("unit %q: want a number 0..247", hi)
			}
		}
		if a > 247 || b > 247 || a > b {
			return nil, fmt.Errorf("units %q: want ascending ids in 0..247", part)
		}
		for u := a; u <= b; u++ {
			if !seen[u] {
				seen[u] = true
				units = append(units, uint8(u))
			}
		}
	}
	return units, nil
}

// Per-unit scan timeouts when --timeout is not given: a Modbus TCP
// device on the local network answers within milliseconds, a serial bus
// at 9600 baud needs the longer one.
const (
	scanTimeoutSerial = 300 * time.Millisecond
	scanTimeoutTCP    = 100 * time.Millisecond
)

func cmdModbusScan(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hearth modbus scan", stderr)
	lf := addLinkFlags(fs)
	unitsFlag := fs.String("units", "1-247", "unit ids to try: a list of ids and ranges, such as 1-10,100")
	all := fs.Bool("all", false, "with --direct on tcp: ask every unit, not stop at the first that answers")
	fs.Lookup("timeout").DefValue = "300ms serial, 100ms tcp"
	*lf.timeout = 0
	if code, ok := parseNoArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	if *lf.timeout == 0 {
		*lf.timeout = scanTimeoutSerial
		if *lf.direct && lf.transportName() == drivers.TransportTCP {
			*lf.timeout = scanTimeoutTCP
		}
	}
	units, err := parseUnits(*unitsFlag)
	if err != nil {
		fmt.Fprintln(stderr, "hearth modbus scan: --units:", err)
		return exitUsage
	}
	if !*lf.direct {
		return scanViaAgent(lf, units, stdout, stderr)
	}
	bus, code := lf.open("hearth modbus scan", stderr)
	if bus == nil {
		return code
	}
	defer bus.Close()
	ctx, cancel := signalContext()
	defer cancel()
	var progress func(int, uint8)
	if !*lf.asJSON && len(units) > 10 {
		progress = func(i int, u uint8) { fmt.Fprintf(stderr, "\rscanning unit %d (%d/%d)", u, i+1, len(units)) }
	}
	var onFound func(drivers.ScanResult)
	if !*lf.asJSON {
		rows := 0
		onFound = func(r drivers.ScanResult) {
			if progress != nil {
				fmt.Fprint(stderr, "\r\033[K")
			}
			if rows == 0 {
				printScanRow(stdout, nil)
			}
			rows++
			printScanRow(stdout, &r)
		}
	}
	stopAtFirst := lf.transportName() == drivers.TransportTCP && !*all
	found, err := scanLink(ctx, bus, lf.transportName(), *lf.address, units, *lf.timeout, stopAtFirst, progress, onFound)
	if progress != nil {
		fmt.Fprintln(stderr)
	}
	if cause, _ := diag.DeviceCause(err, lf.transportName(), *lf.address, int(units[0])); diag.LinkCause(cause) {
		lf.explain(stderr, "hearth modbus scan", err, units[0])
		return exitFailed
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "hearth modbus scan: interrupted")
		return exitFailed
	}
	if onFound != nil && len(found) > 0 {
		if stopAtFirst && found[0].Unit != units[len(units)-1] {
			fmt.Fprintf(stderr, "stopped at unit %d, the first that answered on this TCP device; --all asks the other units too\n", found[0].Unit)
		}
		return exitOK // printed as they answered
	}
	return printScan(found, lf, *unitsFlag, stdout, stderr)
}

// sunspecBase is the first address a SunSpec scan asks at.
const sunspecBase = 40000

// scanLink asks each of units on bus whether it is there (and speaks
// SunSpec), calling progress before each and found after each that
// answers (either may be nil), and returns those that answered. With
// stopAtFirst it stops at the first unit that answers. err is the first unit's error when it did not answer: a port
// that cannot be opened, or a connection refused, is the same for every
// unit (diag.LinkCause), and then the scan stops there rather than report
// that no unit answered.
func scanLink(ctx context.Context, bus *drivers.Bus, transport, address string, units []uint8, timeout time.Duration,
	stopAtFirst bool, progress func(int, uint8), onFound func(drivers.ScanResult)) (found []drivers.ScanResult, err error) {
	found = []drivers.ScanResult{}
	_, err = bus.ReadOnce(ctx, units[0], drivers.Holding, sunspecBase, 2, timeout)
	var exc *drivers.ExceptionError
	if errors.As(err, &exc) {
		err = nil // an answer
	}
	if cause, _ := diag.DeviceCause(err, transport, address, int(units[0])); diag.LinkCause(cause) {
		return found, err
	}
	for i, u := range units {
		if ctx.Err() != nil {
			break
		}
		if i == 0 && err != nil {
			continue // asked once already, in vain
		}
		if progress != nil {
			progress(i, u)
		}
		if res, ok := drivers.ScanUnit(ctx, bus, u, timeout); ok {
			found = append(found, res)
			if onFound != nil {
				onFound(res)
			}
			if stopAtFirst {
				break
			}
		}
	}
	return found, err
}

// scanViaAgent asks the running agent to scan on its own link.
func scanViaAgent(lf linkFlags, units []uint8, stdout, stderr io.Writer) int {
	if *lf.timeout <= 0 || *lf.timeout > 5*time.Second {
		fmt.Fprintln(stderr, "hearth modbus scan: --timeout must be above 0 and at most 5s through the agent")
		return exitUsage
	}
	req := diag.ModbusScanRequest{ModbusTarget: lf.target(), Timeout: lf.timeout.String()}
	for _, u := range units {
		req.Units = append(req.Units, int(u))
	}
	// Every absent unit costs the agent one timeout on the link.
	limit := diag.RequestTimeout + time.Duration(len(units))*(*lf.timeout+100*time.Millisecond)
	c := diag.NewClient(lf.diag.socketPath()).WithTimeout(limit)
	if !*lf.asJSON && len(units) > 10 {
		fmt.Fprintf(stderr, "scanning %d units through the agent (up to %s)\n", len(units), limit.Round(time.Second))
	}
	var res diag.ModbusScanResult
	if err := c.Do("POST", "/modbus/scan", nil, req, &res); err != nil {
		return fail(stderr, "modbus scan", err)
	}
	return printScan(res.Units, lf, units2string(units), stdout, stderr)
}

// printScan prints what a scan of units found. A scan that found no unit
// failed (exit 1), with what to check next on stderr; its JSON form still
// goes to stdout.
func printScan(found []drivers.ScanResult, lf linkFlags, units string, stdout, stderr io.Writer) int {
	code := exitOK
	if len(found) == 0 {
		_, hint := diag.DeviceCause(drivers.ErrTimeout, lf.transportName(), *lf.address, 0)
		hint = strings.Replace(hint, "no reply from unit 0: wrong unit id?", "wrong unit ids, or a device that is off?", 1)
		where := *lf.address
		if where == "" {
			where = "the link of " + cmp.Or(*lf.device, "the agent's device")
		}
		fmt.Fprintf(stderr, "hearth modbus scan: no unit answered on %s (units %s, %s each)\n  %s\n", where, units, *lf.timeout, hint)
		code = exitFailed
	}
	if *lf.asJSON {
		writeJSON(stdout, struct {
			Units []drivers.ScanResult `json:"units"`
		}{found})
		return code
	}
	if len(found) == 0 {
		return code
	}
	printScanRow(stdout, nil)
	for _, r := range found {
		printScanRow(stdout, &r)
	}
	return exitOK
}

// printScanRow prints one row of the scan table, or its header for nil.
// The columns have fixed widths so that rows can be printed as units
// answer.
func printScanRow(w io.Writer, r *drivers.ScanResult) {
	const row = "%-5s %-8s %-6s %-16s %s\n"
	if r == nil {
		fmt.Fprintf(w, row, "UNIT", "SUNSPEC", "BASE", "MODELS", "DEVICE")
		return
	}
	ss, base, models, dev := "no", "-", "-", "-"
	if r.SunSpec {
		ss, base = "yes", strconv.Itoa(int(r.Base))
		var ids []string
		for _, m := range r.Models {
			ids = append(ids, strconv.Itoa(int(m.ID)))
		}
		models = strings.Join(ids, ",")
		if r.Identity != nil {
			dev = strings.TrimSpace(r.Identity.Manufacturer + " " + r.Identity.Model + " " + r.Identity.Serial)
		}
	} else if r.Error != "" {
		ss = "error: " + r.Error
	}
	fmt.Fprintf(w, row, strconv.Itoa(int(r.Unit)), ss, base, models, dev)
}

// units2string writes a unit list back in the --units form, for messages.
func units2string(units []uint8) string {
	var parts []string
	for i := 0; i < len(units); {
		j := i
		for j+1 < len(units) && units[j+1] == units[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", units[i], units[j]))
		} else {
			parts = append(parts, strconv.Itoa(int(units[i])))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
