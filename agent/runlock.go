package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers"
	"github.com/hearth-energy/hearth/runlock"
)

// IsAnotherAgent reports whether err, from New, is the refusal to start
// beside another agent that holds this one's gateway, diagnostics socket,
// a device link or its data_dir.
func IsAnotherAgent(err error) bool {
	return errors.Is(err, runlock.ErrHeld) || errors.Is(err, buffer.ErrDirHeld)
}

// lockRuntime takes the locks that keep one agent per gateway, in the
// runtime folder (the diagnostics socket's, /run/hearth by default): the
// gateway id (one MQTT session), the socket, and each device link (TCP
// address and unit, serial port: one writer per battery). A socket that
// a process accepts on without holding its lock (an agent of an older
// version, another program) refuses too, naming that process. Nothing is
// opened, dialled or removed before every lock is held.
func lockRuntime(cfg *config.Config) (runlock.Set, error) {
	dir := filepath.Dir(cfg.DiagSocket)
	me := runlock.Holder{PID: os.Getpid(), Config: cfg.Path}
	if abs, err := filepath.Abs(cfg.Path); err == nil && cfg.Path != "" {
		me.Config = abs
	}
	var set runlock.Set
	take := func(name, what string) error {
		l, err := runlock.Acquire(dir, name, what, me)
		if err != nil {
			return err
		}
		set = append(set, l)
		return nil
	}
	err := take(runlock.Name("gateway", cfg.GatewayID), "gateway "+cfg.GatewayID)
	if err == nil {
		err = take(filepath.Base(cfg.DiagSocket)+".lock", "the diagnostics socket "+cfg.DiagSocket)
	}
	if err == nil {
		if pid, live := diag.SocketPeer(cfg.DiagSocket); live {
			err = &runlock.HeldError{What: "the diagnostics socket " + cfg.DiagSocket, Path: cfg.DiagSocket,
				Holder: runlock.Holder{PID: pid, Config: runlock.CommandConfig(pid)}}
		}
	}
	taken := map[string]bool{}
	for _, d := range cfg.Devices {
		if err != nil {
			break
		}
		key, what := linkLock(d)
		if !taken[key] {
			taken[key] = true
			err = take(runlock.Name("link", key), what)
		}
	}
	if err != nil {
		set.Release()
		if errors.Is(err, runlock.ErrHeld) {
			return nil, fmt.Errorf("%w: one agent per gateway: stop that agent first (systemctl stop hearth), or give this one a gateway_id, diag_socket and devices of its own", err)
		}
		return nil, err
	}
	return set, nil
}

// linkLock names what a device's link lock keeps: a serial port whole
// (by its real path, so /dev/serial/by-id names meet /dev/ttyUSB0), a
// TCP address (or serial gateway) per unit.
func linkLock(d config.DeviceConfig) (key, what string) {
	if d.Transport == drivers.TransportRTU {
		path := d.Address
		if real, err := filepath.EvalSymlinks(path); err == nil {
			path = real
		}
		return "serial " + path, fmt.Sprintf("serial port %s (device %s)", path, d.Name)
	}
	addr := d.Address
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			host = ip.String()
		}
		addr = net.JoinHostPort(strings.ToLower(host), port)
	}
	return fmt.Sprintf("net %s unit %d", addr, d.UnitID), fmt.Sprintf("device link %s unit %d (device %s)", addr, d.UnitID, d.Name)
}
