package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-energy/hearth/buffer"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestAgentKilledLosesNothingUnreported SIGKILLs the real agent three
// times: with a healthy uplink (readings in memory, never stored), during
// an outage (readings stored), and right after it ended (backlog
// draining). After a clean last run, every seq from 1 to the last one
// assigned was received by the cloud, is still in the buffer, or lies in
// a gap event the agent published: no seq is silently missing.
func TestAgentKilledLosesNothingUnreported(t *testing.T) {
	t.Parallel()
	const gw = "gw-kill"
	mq := startBroker(t)
	px := harness.StartProxy(t, mq.Addr())
	var devs []devSpec
	for i := range 1 {
		_, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: fmt.Sprintf("KILL%d", i)})
		devs = append(devs, devSpec{fmt.Sprintf("dev%d", i), addr})
	}
	dir := t.TempDir()
	cfg := writeConfig(t, dir, gw, px.URL(), "100ms", devs)
	rec := subscribe(t, mq.URL(), "hearth/v1/"+gw+"/#")
	count := func() int { return len(seqSet(readings(t, rec.Messages(), gw))) }
	waitMore := func(n int) {
		t.Helper()
		want := count() + n
		rec.WaitFor(t, 60*time.Second, func(m []harness.Message) bool { return len(seqSet(readings(t, m, gw))) >= want })
	}
	p := startAgent(t, cfg) // healthy: killed with readings in memory
	waitMore(20)
	p.Kill()

	p = startAgent(t, cfg) // outage: killed with readings stored
	waitMore(10)
	px.Refuse(true)
	px.Cut()
	time.Sleep(3 * time.Second)
	p.Kill()
	px.Refuse(false)

	p = startAgent(t, cfg) // killed while the backlog drains
	waitMore(10)
	p.Kill()

	p = startAgent(t, cfg)
	waitMore(40)
	if _, err := p.Stop(5 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	store, err := buffer.Open(filepath.Join(dir, "hearth.db"), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	st, err := store.Stats()
	if err != nil {
		t.Fatal(err)
	}
	covered := seqSet(readings(t, rec.Messages(), gw))
	pending, err := store.Pending(100000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pending {
		covered[r.Seq] = true
	}
	var gaps []string
	addGap := func(g buffer.Gap) {
		gaps = append(gaps, fmt.Sprintf("%d..%d %s", g.FromSeq, g.ToSeq, g.Reason))
		for s := g.FromSeq; s <= g.ToSeq && s <= st.LastSeq; s++ {
			covered[s] = true
		}
	}
	for _, m := range rec.Messages() {
		if !strings.HasSuffix(m.Topic, "/event") {
			continue
		}
		var ev struct {
			Type string `json:"type"`
			buffer.Gap
		}
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Fatalf("event %s: %v", m.Payload, err)
		}
		if ev.Type == buffer.EventGap {
			addGap(ev.Gap)
		}
	}
	evs, err := store.PendingEvents(1000) // recorded, not yet published
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		var g buffer.Gap
		if e.Type == buffer.EventGap && json.Unmarshal(e.Data, &g) == nil {
			addGap(g)
		}
	}
	var missing []uint64
	for s := uint64(1); s <= st.LastSeq; s++ {
		if !covered[s] {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		t.Errorf("of seqs 1..%d, %d were neither received, nor pending, nor in a gap: %v (gaps: %v)", st.LastSeq, len(missing), missing, gaps)
	}
	if len(gaps) == 0 {
		t.Errorf("no gap event after three kills with readings in memory")
	}
	t.Logf("seqs 1..%d: %d received or pending, gaps %v", st.LastSeq, len(seqSet(readings(t, rec.Messages(), gw)))+len(pending), gaps)
}
