package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hearth-energy/hearth/diag"
)

// The human forms of the diagnostics: compact, aligned, within 80 columns,
// ages as ages, values with units, bad quality marked so it cannot be
// mistaken for a value.

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// ago formats how long before now t was.
func ago(now time.Time, t time.Time) string { return diag.Age(now.Sub(t)) + " ago" }

// clip shortens s to n runes, marking the cut.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// renderStatus writes the status screen. wide shows every error whole and
// each device's link, for a terminal wider than 80 columns.
func renderStatus(w io.Writer, st diag.StatusReport, now time.Time, wide bool) {
	a := st.Agent
	fmt.Fprintf(w, "hearth %s on %s · up %s · clock %s · log %s\n", a.Version, a.GatewayID,
		diag.Age(time.Duration(a.UptimeS*float64(time.Second))), a.Clock, strings.ToLower(a.LogLevel))
	fmt.Fprintln(w)
	fit := func(s string, n int) string {
		if wide {
			return s
		}
		return clip(s, n)
	}
	tw := table(w)
	if wide {
		fmt.Fprintln(tw, "DEVICE\tSTATE\tLAST OK\tPOLLS\tFAILS\tLINK\tUNIT\tDETAIL")
	} else {
		fmt.Fprintln(tw, "DEVICE\tSTATE\tLAST OK\tPOLLS\tFAILS\tDETAIL")
	}
	var hints []string
	for _, d := range st.Devices {
		state, last, detail := "up", "never", ""
		if !d.Up {
			state = "DOWN"
		}
		if d.LastOK != nil {
			last = ago(now, *d.LastOK)
		}
		label := diag.CauseLabel(d.Cause, d.UnitID)
		switch {
		case d.LastError != "" && (wide || label == ""):
			detail = d.LastError
		case d.LastError != "":
			detail = label
		case d.Identity != nil:
			detail = strings.TrimSpace(d.Identity.Manufacturer + " " + d.Identity.Model + " " + d.Identity.Serial)
		default:
			detail = d.Transport + " " + d.Address
		}
		if d.Hint != "" && d.Hint != d.LastError {
			h := d.Name + ": " + d.Hint
			if d.NextProbe != nil {
				h += fmt.Sprintf(" (next probe in %s)", diag.Age(time.Until(*d.NextProbe)))
			}
			hints = append(hints, h)
		}
		if wide {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s %s\t%d\t%s\n", d.Name, state, last, d.Polls, d.Failures, d.Transport, d.Address, d.UnitID, detail)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", d.Name, state, last, d.Polls, d.Failures, clip(detail, 34))
		}
	}
	tw.Flush()
	for _, h := range hints {
		if wide {
			fmt.Fprintln(w, h)
		} else {
			fmt.Fprintln(w, wrap(h, 80, "  "))
		}
	}
	fmt.Fprintln(w)
	kv := table(w)
	safety := st.Safety.State
	if len(st.Safety.Trips) > 0 {
		safety += " (tripped: " + strings.Join(st.Safety.Trips, ", ") + ")"
	}
	fmt.Fprintf(kv, "safety\t%s\n", safety)
	for _, name := range slices.Sorted(maps.Keys(st.Safety.Devices)) {
		ds := st.Safety.Devices[name]
		line := ds.Safety
		if len(ds.Trips) > 0 && !(len(ds.Trips) == 1 && ds.Trips[0] == ds.Safety) {
			line += " (tripped: " + strings.Join(ds.Trips, ", ") + ")"
		}
		fmt.Fprintf(kv, "\t%s: %s\n", name, line)
	}
	mode := st.Safety.Mode
	if st.Safety.AppliedW != nil {
		mode += fmt.Sprintf(", commanding %s", watts(float64(*st.Safety.AppliedW)))
	}
	fmt.Fprintf(kv, "mode\t%s\n", mode)
	fmt.Fprintf(kv, "lease\t%s\n", leaseLine(st.Lease, now))
	up := st.Uplink
	node := ""
	if i := slices.Index(up.Brokers, up.Broker); i >= 0 {
		node = fmt.Sprintf(" (node %d of %d)", i+1, len(up.Brokers))
	}
	switch {
	case up.Connected && up.ConnectedSince != nil:
		fmt.Fprintf(kv, "uplink\tconnected to %s%s for %s\n", up.Broker, node, diag.Age(now.Sub(*up.ConnectedSince)))
	case up.Connected:
		fmt.Fprintf(kv, "uplink\tconnected to %s\n", up.Broker)
	case up.BootDelayUntil != nil:
		fmt.Fprintf(kv, "uplink\tboot delay: first attempt to %s in %s\n", up.Broker, diag.Age(up.BootDelayUntil.Sub(now)))
		fmt.Fprintf(kv, "\t(`hearth uplink reconnect` connects now)\n")
	default:
		msg := "DOWN"
		if up.DownSince != nil {
			msg += " for " + diag.Age(now.Sub(*up.DownSince))
		}
		msg += fmt.Sprintf(", %d attempts to %s%s", up.Attempts, up.Broker, node)
		if up.NextAttempt != nil {
			msg += ", next in " + diag.Age(up.NextAttempt.Sub(now))
		} else {
			msg += ", attempting now"
		}
		fmt.Fprintf(kv, "uplink\t%s\n", msg)
		if up.LastError != "" {
			fmt.Fprintf(kv, "\tlast error: %s\n", fit(up.LastError, 60))
		}
		if up.NextAttempt != nil {
			fmt.Fprintf(kv, "\t(`hearth uplink reconnect` tries now)\n")
		}
	}
	fmt.Fprintf(kv, "buffer\t%s\n", bufferLine(st.Buffer, now))
	kv.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, wrapVerdict(st.Verdict, 80))
}

// wrap folds s at spaces into lines of at most width runes (a longer word
// stays whole), indenting the continuations.
func wrap(s string, width int, indent string) string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case len([]rune(line))+1+len([]rune(word)) > width:
			lines = append(lines, line)
			line = indent + word
		default:
			line += " " + word
		}
	}
	return strings.Join(append(lines, line), "\n")
}

// wrapVerdict folds a long verdict at its "; " separators, indenting the
// continuation under the first reason.
func wrapVerdict(v string, width int) string {
	head, rest, ok := strings.Cut(v, ": ")
	if !ok || len(v) <= width {
		return v
	}
	indent := strings.Repeat(" ", len(head)+2)
	var lines []string
	line := head + ": "
	for i, r := range strings.Split(rest, "; ") {
		if i > 0 {
			if len(line)+2+len(r) > width {
				lines = append(lines, line+";")
				line = indent + r
				continue
			}
			line += "; "
		}
		line += r
	}
	return strings.Join(append(lines, line), "\n")
}

func leaseLine(l *diag.LeaseReport, now time.Time) string {
	if l == nil {
		return "none"
	}
	return fmt.Sprintf("%s v%d from %s until %s (%s left), then %s", clip(l.ID, 12), l.Version, l.Source,
		l.ValidUntil.Local().Format("15:04:05"), diag.Age(remaining(l)), l.Fallback)
}

// remaining is how long the agent still holds the lease, as it measures
// it: not valid_until minus this machine's clock, which may be off.
func remaining(l *diag.LeaseReport) time.Duration {
	return time.Duration(l.RemainingS * float64(time.Second))
}

func bufferLine(b diag.BufferReport, now time.Time) string {
	if b.Error != "" {
		return "ERROR: " + b.Error
	}
	s := fmt.Sprintf("%s readings, %s events pending", count(b.PendingReadings), count(b.PendingEvents))
	if b.OldestPending != nil {
		s += ", oldest " + ago(now, *b.OldestPending)
	}
	s += fmt.Sprintf(", %s", size(b.FileBytes))
	if b.MaxBytes > 0 {
		s += fmt.Sprintf(" of %s", size(b.MaxBytes))
	}
	return s
}

func renderBuffer(w io.Writer, b diag.BufferReport, now time.Time) {
	kv := table(w)
	if b.Error != "" {
		fmt.Fprintf(kv, "error\t%s\n", b.Error)
	}
	fmt.Fprintf(kv, "pending readings\t%s\n", count(b.PendingReadings))
	fmt.Fprintf(kv, "pending events\t%s\n", count(b.PendingEvents))
	oldest := "-"
	if b.OldestPending != nil {
		oldest = ago(now, *b.OldestPending)
	}
	fmt.Fprintf(kv, "oldest unsent\t%s\n", oldest)
	fmt.Fprintf(kv, "file size\t%s\n", size(b.FileBytes))
	quota := "none"
	if b.MaxBytes > 0 {
		quota = fmt.Sprintf("%s (%d%% used)", size(b.MaxBytes), 100*b.FileBytes/b.MaxBytes)
	}
	fmt.Fprintf(kv, "quota\t%s\n", quota)
	fmt.Fprintf(kv, "last seq\t%d\n", b.LastSeq)
	if b.ReservedSeq > b.LastSeq {
		fmt.Fprintf(kv, "reserved\tup to seq %d, for readings held in memory\n", b.ReservedSeq)
	}
	fmt.Fprintf(kv, "compacted\t%s readings into minutes, in %s passes\n", count(b.ReadingsCompacted), count(b.Compactions))
	fmt.Fprintf(kv, "pending minutes\t%s\n", count(b.PendingAggregates))
	fmt.Fprintf(kv, "dropped\t%s readings, %s minutes, %s events (reported as gaps)\n",
		count(b.ReadingsDropped), count(b.AggregatesDropped), count(b.EventsDropped))
	disk := "ok"
	if b.DiskFull {
		disk = "FULL"
	}
	fmt.Fprintf(kv, "disk\t%s, %s readings refused since start\n", disk, count(b.ReadingsRefused))
	fmt.Fprintf(kv, "written\t%s by this process, %.0f commits/hour\n", size(b.WriteBytes), b.CommitsPerHour)
	kv.Flush()
}

func renderLease(w io.Writer, l *diag.LeaseReport, now time.Time) {
	if l == nil {
		fmt.Fprintln(w, "no active lease: the agent runs its fallback")
		return
	}
	kv := table(w)
	fmt.Fprintf(kv, "id\t%s\n", l.ID)
	fmt.Fprintf(kv, "version\t%d\n", l.Version)
	fmt.Fprintf(kv, "source\t%s\n", l.Source)
	fmt.Fprintf(kv, "valid until\t%s (%s left)\n", l.ValidUntil.Local().Format(time.RFC3339), diag.Age(remaining(l)))
	fmt.Fprintf(kv, "fallback\t%s\n", l.Fallback)
	kv.Flush()
}

func renderPoints(w io.Writer, pts []diag.PointReport) {
	if len(pts) == 0 {
		fmt.Fprintln(w, "no readings yet")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "DEVICE\tPOINT\tVALUE\tAGE\t")
	for _, p := range pts {
		val := ""
		switch {
		case p.Value == nil:
			val = "[" + string(p.Quality) + "]"
		default:
			val = strings.TrimSpace(number(*p.Value) + " " + p.Unit)
		}
		mark := ""
		if p.Stale {
			mark = "STALE"
		}
		if p.Value == nil && p.LastGood != nil && p.LastGoodTS != nil {
			mark = strings.TrimSpace(mark + " last good " + strings.TrimSpace(number(*p.LastGood)+" "+p.Unit) +
				", " + diag.Age(time.Since(*p.LastGoodTS)) + " ago")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Device, p.Name, val, diag.Age(time.Duration(p.AgeS*float64(time.Second))), mark)
	}
	tw.Flush()
}

func renderEvents(w io.Writer, evs []diag.EventReport, now time.Time) {
	if len(evs) == 0 {
		fmt.Fprintln(w, "no events")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "TIME\tAGE\tTYPE\tDETAIL")
	for _, e := range evs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Time.Local().Format("01-02 15:04:05"), diag.Age(now.Sub(e.Time)), e.Type, clip(detail(e.Data), 44))
	}
	tw.Flush()
}

// detail writes an event's data as key=value pairs in key order.
func detail(data map[string]any) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		if k != "type" && k != "ts" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		v := data[k]
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case float64:
			s = number(x)
		default:
			b, _ := json.Marshal(x)
			s = string(b)
		}
		parts = append(parts, k+"="+s)
	}
	return strings.Join(parts, " ")
}

// number prints a value without float noise: at most 3 decimals, no
// trailing zeros.
func number(v float64) string {
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func watts(v float64) string {
	if v > 0 {
		return number(v) + " W (discharging)"
	}
	if v < 0 {
		return number(v) + " W (charging)"
	}
	return "0 W"
}

func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func size(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
