package faults

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hearth-energy/hearth"
	"github.com/hearth-energy/hearth/diag"
	"github.com/hearth-energy/hearth/drivers/sim"
	"github.com/hearth-energy/hearth/internal/harness"
)

// TestClusterNodeKilled runs the agent against a 3-node NATS cluster
// (MQTT sessions in JetStream, replicated to every node) and SIGKILLs the
// node it is connected to, twice, the first killed node restarted in
// between: each time the agent must be connected to a surviving node
// while the killed one is still down, a lease published during the outage
// must be applied and acked (resent without an ack, as the contract tells
// a cloud: the cluster may lose it while it elects leaders), and in the end
// every seq must have arrived or be in a gap event.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel()
	nodes := harness.StartNATSCluster(t, 3)
	urls := make([]string, len(nodes))
	byURL := map[string]*harness.NATS{}
	for i, n := range nodes {
		urls[i] = n.URL()
		byURL[n.URL()] = n
	}
	_, addr := startSim(t, sim.Config{InitialSoC: 60, Serial: "FLTCLU"})
	g := newGateway(t, "gw-cluster", gatewayOpts{Brokers: urls, Poll: "200ms", Devices: []device{{"battery", addr}}})
	o := observeCluster(t, urls, g.id)
	g.start()
	waitReadings(t, o, 10, 30*time.Second)

	var killed []string
	for round := 1; round <= 2; round++ {
		on := g.uplinkNode(func(u diag.UplinkReport) bool { return u.Connected })
		n, ok := byURL[on]
		if !ok {
			t.Fatalf("the agent is connected to %q, not a node of the cluster %v", on, urls)
		}
		step(t, "round %d: SIGKILL the node the agent is on (%s) and publish lease v%d through another", round, on, round)
		n.Stop()
		killed = append(killed, on)
		var others []string
		for _, u := range urls {
			if u != on && byURL[u].Running() {
				others = append(others, u)
			}
		}
		id := fmt.Sprintf("clu-%d", round)
		lease := powerLease(g.id, id, uint64(round), 800, 10*time.Minute, nil)
		via := harness.PublishCluster(t, others, "hearth/v1/"+g.id+"/setpoint", lease, 60*time.Second)
		t.Logf("round %d: lease v%d acknowledged by %s", round, round, via)
		now := g.uplinkNode(func(u diag.UplinkReport) bool { return u.Connected && u.Broker != on })
		if n.Running() {
			t.Fatalf("round %d: the killed node runs again", round)
		}
		if _, ok := byURL[now]; !ok {
			t.Fatalf("round %d: reconnected to %q, not a node of the cluster", round, now)
		}
		t.Logf("round %d: connected to %s while %s is down: ok", round, now, on)
		// The contract's resend rule: without an ack, the cloud sends the
		// same lease again (docs/mqtt.md, Leases); the agent applies it
		// or acks it duplicate.
		acked := func() bool {
			for _, a := range o.ledger().acks {
				if a.ID == id {
					return true
				}
			}
			return false
		}
		for resends := 0; !acked(); resends++ {
			deadline := time.Now().Add(10 * time.Second)
			for !acked() && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if acked() {
				break
			}
			if resends == 5 {
				t.Fatalf("round %d: no ack of %s after %d resends", round, id, resends)
			}
			t.Logf("round %d: no ack of %s within 10 s: resent (the contract's resend rule)", round, id)
			harness.PublishCluster(t, urls, "hearth/v1/"+g.id+"/setpoint", lease, 60*time.Second)
		}
		if round == 1 {
			step(t, "restart %s", on)
			n.Start()
		}
	}
	time.Sleep(time.Second)
	g.alive()
	step(t, "let the agent drain, then check")
	l := settle(t, g, o, 60*time.Second)

	for round := 1; round <= 2; round++ {
		id := fmt.Sprintf("clu-%d", round)
		var got []string
		for _, a := range l.acks {
			if a.ID == id {
				got = append(got, string(a.Result))
			}
		}
		if len(got) == 0 || got[0] != string(hearth.ResultApplied) || slices.ContainsFunc(got[1:], func(r string) bool { return r != string(hearth.ResultDuplicate) }) {
			t.Errorf("check leases: %s (published while its node was down) acked %v; want applied (then duplicate for a resend)", id, got)
		}
	}
	lost := map[string]bool{}
	for _, e := range l.eventsOfType("uplink_lost") {
		b, _ := e["broker"].(string)
		lost[b] = true
	}
	for _, k := range killed {
		if !lost[k] {
			t.Errorf("check events: no uplink_lost naming the killed node %s: %v", k, l.eventsOfType("uplink_lost"))
		}
	}
}

// uplinkNode waits until the agent's status satisfies cond and returns
// the node it names.
func (g *gateway) uplinkNode(cond func(diag.UplinkReport) bool) string {
	g.t.Helper()
	var st diag.StatusReport
	waitFor(g.t, "the agent's uplink status", 30*time.Second, func() bool {
		g.alive()
		return g.diagGet("status", &st) == nil && cond(st.Uplink)
	})
	return st.Uplink.Broker
}
