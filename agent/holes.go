package agent

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers"
)

// holeStore keeps the registers each SunSpec device refused in the
// agent's state file (beside the lease state, which survives a corrupt
// buffer), one key per device: a restart does not learn them again by
// failing.
type holeStore struct {
	st  *buffer.State
	log *slog.Logger
}

var _ drivers.HoleStore = holeStore{}

func holesKey(device string) string { return "holes." + device }

// LoadHoles returns the holes kept for device. What cannot be read is
// logged here, with the file it came from, and reported as nothing kept:
// the device starts with no known holes and learns again whatever it
// refuses, at one refused read and its split each.
func (h holeStore) LoadHoles(device string) (drivers.LearnedHoles, bool, error) {
	key := holesKey(device)
	v, ok, err := h.st.Meta(key)
	if err == nil && !ok {
		return drivers.LearnedHoles{}, false, nil
	}
	var lh drivers.LearnedHoles
	if err == nil {
		err = json.Unmarshal([]byte(v), &lh)
	}
	if err != nil {
		h.log.Warn("learned register holes unreadable: starting with no known holes, refused registers are learned again",
			"device", device, "path", h.st.Path(), "key", key, "err", err)
		return drivers.LearnedHoles{}, false, nil
	}
	return lh, true, nil
}

func (h holeStore) SaveHoles(device string, lh drivers.LearnedHoles) error {
	b, err := json.Marshal(lh)
	if err == nil {
		err = h.st.SetMeta(holesKey(device), string(b))
	}
	if err != nil {
		h.log.Error("keep learned register holes", "device", device, "err", err)
		return fmt.Errorf("keep learned holes of %s: %w", device, err)
	}
	h.log.Info("device refuses registers: learned as holes", "device", device, "holes", lh.Holes,
		"manufacturer", lh.Identity.Manufacturer, "model", lh.Identity.Model, "serial", lh.Identity.Serial, "firmware", lh.Identity.Firmware)
	return nil
}
