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

func (h holeStore) LoadHoles(device string) (drivers.LearnedHoles, bool, error) {
	v, ok, err := h.st.Meta(holesKey(device))
	if err != nil || !ok {
		return drivers.LearnedHoles{}, false, err
	}
	var lh drivers.LearnedHoles
	if err := json.Unmarshal([]byte(v), &lh); err != nil {
		h.log.Warn("learned register holes unreadable: learning them again", "device", device, "err", err)
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
