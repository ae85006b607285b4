package main

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/internal/harness"
)

// serve runs the server with args until the test ends, and returns the
// Modbus TCP address and unit id it says it serves.
func serve(t *testing.T, args ...string) (addr string, unit int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut harness.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- cmdServe(ctx, args, &out, &errOut) }()
	t.Cleanup(func() { cancel(); <-done })
	re := regexp.MustCompile(`serving Modbus TCP on (\S+) \(unit (\d+)\)`)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			unit, _ := strconv.Atoi(m[2])
			return m[1], unit
		}
		select {
		case code := <-done:
			t.Fatalf("hearthsim %v exited %d before serving:\n%s", args, code, errOut.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// readHolding makes one Modbus TCP read of a holding register at unit and
// returns the answer's function code (0x03, or 0x83 for an exception).
func readHolding(t *testing.T, addr string, unit uint8, reg uint16) byte {
	fc, _ := askHolding(t, addr, unit, reg)
	return fc
}

// askHolding reads one holding register at unit: the answer's function
// code and, for a good answer, the register's value.
func askHolding(t *testing.T, addr string, unit uint8, reg uint16) (byte, uint16) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) // a unit the simulator does not serve gets no answer
	req := []byte{0, 1, 0, 0, 0, 6, unit, 0x03}
	req = binary.BigEndian.AppendUint16(req, reg)
	req = binary.BigEndian.AppendUint16(req, 1)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 8)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatalf("read register %d at unit %d: %v (no answer)", reg, unit, err)
	}
	if head[6] != unit {
		t.Fatalf("answer from unit %d, asked %d", head[6], unit)
	}
	if head[7] != 0x03 {
		return head[7], 0
	}
	body := make([]byte, 3) // byte count and the register
	if _, err := io.ReadFull(c, body); err != nil || body[0] != 2 {
		t.Fatalf("read register %d at unit %d: %v, byte count %d", reg, unit, err, body[0])
	}
	return head[7], binary.BigEndian.Uint16(body[1:])
}

// TestEmptyBatteryIsServedEmpty: --soc 0 is an empty battery, not the
// simulator's default; a state of charge outside 0..100 is refused.
func TestEmptyBatteryIsServedEmpty(t *testing.T) {
	t.Parallel()
	for _, soc := range []string{"0", "37"} {
		addr, unit := serve(t, "--profile", "goodwe_et", "--modbus", "127.0.0.1:0", "--soc", soc)
		fc, v := askHolding(t, addr, uint8(unit), 37007)
		if want, _ := strconv.Atoi(soc); fc != 0x03 || int(v) != want {
			t.Errorf("--soc %s: the battery's SoC register reads %d (function %#x), want %d", soc, v, fc, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a server started by mistake returns at once, 0
	for _, soc := range []string{"-1", "101", "NaN"} {
		var out, errOut strings.Builder
		if code := cmdServe(ctx, []string{"--modbus", "127.0.0.1:0", "--soc", soc}, &out, &errOut); code != 2 ||
			!strings.Contains(errOut.String(), "--soc") {
			t.Errorf("--soc %s: exit %d, stderr %q; want 2 naming --soc", soc, code, errOut.String())
		}
	}
}

// TestVendorProfileServesItsOwnUnit: `hearthsim --profile goodwe_et` (and
// kostal_plenticore, sma_storage, alphaess) answers at the vendor's own
// unit (247, 71, 3, 85) when --unit is not given, and at the one given
// when it is.
func TestVendorProfileServesItsOwnUnit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		profile string
		args    []string
		unit    uint8
		soc     uint16 // a register the vendor's map serves: the SoC
	}{
		{"goodwe_et", nil, 247, 37007},
		{"kostal_plenticore", nil, 71, 514},
		{"sungrow_sh", nil, 1, 13049},
		{"sma_storage", nil, 3, 30845},
		{"alphaess", nil, 85, 0x0102},
		{"goodwe_et", []string{"--unit", "5"}, 5, 37007},
		{"kostal_plenticore", []string{"--unit", "1"}, 1, 514},
	} {
		t.Run(c.profile+strings.Join(c.args, ""), func(t *testing.T) {
			t.Parallel()
			addr, said := serve(t, append([]string{"--profile", c.profile, "--modbus", "127.0.0.1:0"}, c.args...)...)
			if said != int(c.unit) {
				t.Errorf("says it serves unit %d, want %d", said, c.unit)
			}
			if fc := readHolding(t, addr, c.unit, c.soc); fc != 0x03 {
				t.Errorf("read of register %d at unit %d: function %#x, want 0x03", c.soc, c.unit, fc)
			}
		})
	}
	addr, said := serve(t, "--modbus", "127.0.0.1:0")
	if said != 1 || readHolding(t, addr, 1, 40000) != 0x03 {
		t.Errorf("the SunSpec simulator says unit %d, want 1, answering there", said)
	}
}

// TestServeRefusesFlagsTheProfileDoesNotTake: a flag that does not apply
// to the profile is an error naming the flag and the profile, exit 2, and
// nothing is served; so is an unknown profile and a unit out of range.
func TestServeRefusesFlagsTheProfileDoesNotTake(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a server started by mistake returns at once, 0
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--profile", "goodwe_et", "--serial", "X"}, []string{"--serial does not apply to --profile goodwe_et"}},
		{[]string{"--profile", "kostal_plenticore", "--meter", "--cell-temps"},
			[]string{"--cell-temps does not apply to --profile kostal_plenticore", "--meter does not apply to --profile kostal_plenticore"}},
		{[]string{"--profile", "solaredge_storedge", "--fault", "drop"}, []string{"--fault does not apply to --profile solaredge_storedge"}},
		{[]string{"--profile", "sungrow_sh", "--refuse", "103.TmpOt"}, []string{"--refuse does not apply to --profile sungrow_sh"}},
		{[]string{"--profile", "huawei_sun2000", "--baud", "19200"}, []string{"--baud does not apply to --profile huawei_sun2000"}},
		{[]string{"--profile", "huawei_sun2000", "--mqtt", "127.0.0.1:0"}, []string{"--mqtt does not apply to --profile huawei_sun2000"}},
		{[]string{"--profile", "huawei_sun2000", "--control", "/nonexistent/sock"}, []string{"--control does not apply to --profile huawei_sun2000"}},
		{[]string{"--load", "500"}, []string{"--load does not apply to --profile sunspec"}},
		{[]string{"--profile", "fronius_gen24", "--pv", "500", "--setting", "0xE004=4"},
			[]string{"--pv does not apply to --profile fronius_gen24", "--setting does not apply to --profile fronius_gen24"}},
		{[]string{"--profile", "goodwe", "--unit", "247"}, []string{"--profile goodwe: no such profile"}},
		{[]string{"--quirk", "standby"}, []string{"--quirk does not apply to --profile sunspec"}},
		{[]string{"--profile", "sma_storage", "--quirk", "sleepy"}, []string{`sma_storage: no quirk "sleepy" (have standby)`}},
		{[]string{"--unit", "300"}, []string{"--unit 300: a Modbus unit id is 1 to 247"}},
		{[]string{"--profile", "goodwe_et", "--unit", "0"}, []string{"--unit 0: a Modbus unit id is 1 to 247"}},
	} {
		var out, errOut strings.Builder
		args := append([]string{"--modbus", "127.0.0.1:0"}, c.args...)
		code := cmdServe(ctx, args, &out, &errOut)
		if code != 2 || out.Len() != 0 {
			t.Errorf("hearthsim %v: exit %d, stdout %q; want exit 2 and nothing served", args, code, out.String())
		}
		for _, w := range c.want {
			if !strings.Contains(errOut.String(), "hearthsim: "+w) {
				t.Errorf("hearthsim %v: stderr %q lacks %q", args, errOut.String(), w)
			}
		}
	}
}
