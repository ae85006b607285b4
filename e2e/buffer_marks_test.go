package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// eventIDs returns the ids of the events the recorder saw for gw, and the
// ids of those of type typ.
func eventIDs(t *testing.T, msgs []harness.Message, gw, typ string) (all, ofType []uint64) {
	t.Helper()
	for _, m := range msgs {
		if m.Topic != "hearth/v1/"+gw+"/event" {
			continue
		}
		var e struct {
			ID   uint64 `json:"id"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			t.Fatalf("event is not JSON: %s", m.Payload)
		}
		all = append(all, e.ID)
		if e.Type == typ {
			ofType = append(ofType, e.ID)
		}
	}
	return all, ofType
}

// TestCorruptBufferContinuesAboveTheCloudsSeqs: the buffer's database is
// found corrupt at a restart and moved aside. The fresh one must hand out
// seqs and event ids above every one the cloud already holds (it drops
// repeats as duplicates): the high-water marks are kept beside the lease
// state, not in the database.
func TestCorruptBufferContinuesAboveTheCloudsSeqs(t *testing.T) {
	t.Parallel()
	mq := startBroker(t)
	_, addr := startSim(t, sim.Config{InitialSoC: 60})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "gw-marks", mq.URL(), "100ms", []devSpec{{"battery", addr}})
	rec := harness.Subscribe(t, mq.URL(), "hearth/v1/gw-marks/#")
	a := startAgent(t, cfg)
	rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool {
		ids, _ := eventIDs(t, m, "gw-marks", "")
		return len(readings(t, m, "gw-marks")) >= 20 && len(ids) > 0
	})
	if _, err := a.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	before := rec.Messages()
	maxSeq := uint64(0)
	for _, r := range readings(t, before, "gw-marks") {
		maxSeq = max(maxSeq, r.Seq)
	}
	ids, _ := eventIDs(t, before, "gw-marks", "")
	maxID := uint64(0)
	for _, id := range ids {
		maxID = max(maxID, id)
	}

	// Garbage over the database's header: not a database any more.
	db := filepath.Join(dir, "hearth.db")
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	a.Restart()
	rec.WaitFor(t, 20*time.Second, func(m []harness.Message) bool {
		_, corrupt := eventIDs(t, m[len(before):], "gw-marks", "buffer_corrupt")
		return len(corrupt) > 0 && len(readings(t, m[len(before):], "gw-marks")) >= 5
	})
	if aside, _ := filepath.Glob(db + ".corrupt-*"); len(aside) == 0 {
		t.Fatal("the corrupt buffer was not moved aside")
	}
	after := rec.Messages()[len(before):]
	for _, r := range readings(t, after, "gw-marks") {
		if r.Seq <= maxSeq {
			t.Errorf("after the corrupt buffer: reading seq %d, at or below %d the cloud already holds", r.Seq, maxSeq)
			break
		}
	}
	ids, _ = eventIDs(t, after, "gw-marks", "")
	for _, id := range ids {
		if id <= maxID {
			t.Errorf("after the corrupt buffer: event id %d, at or below %d the cloud already holds", id, maxID)
			break
		}
	}
}
