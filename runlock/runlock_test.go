package runlock

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestAcquireRefusesWhileHeld: a lock held (here by this process, through
// another descriptor) refuses a second Acquire with a HeldError naming the
// holder's pid and config; released, it can be taken again.
func TestAcquireRefusesWhileHeld(t *testing.T) {
	dir := t.TempDir()
	me := Holder{PID: os.Getpid(), Config: "/etc/hearth/a.yaml"}
	l, err := Acquire(dir, Name("gateway", "gw-1"), "gateway gw-1", me)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, Name("gateway", "gw-1"), "gateway gw-1", Holder{PID: 1})
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.Holder != me {
		t.Fatalf("second Acquire: %v, want a HeldError naming %+v", err, me)
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(me.PID)+", config /etc/hearth/a.yaml) holds gateway gw-1") {
		t.Errorf("message %q", err)
	}
	l.Release()
	again, err := Acquire(dir, Name("gateway", "gw-1"), "gateway gw-1", me)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	again.Release()
}

func TestName(t *testing.T) {
	for key, want := range map[string]string{
		"gw-0001.a":                "gateway-gw-0001.a.lock",
		"net 192.0.2.7:502 unit 1": "gateway-net_192.0.2.7_502_unit_1.lock",
		"serial /dev/ttyUSB0":      "gateway-serial__dev_ttyUSB0.lock",
	} {
		if got := Name("gateway", key); got != want {
			t.Errorf("Name(%q) = %q, want %q", key, got, want)
		}
	}
}
