package agent

import (
	"context"
	"time"

	"github.com/hearth-energy/hearth/config"
	"github.com/hearth-energy/hearth/hw"
	"github.com/hearth-energy/hearth/uplink"
)

// BrokerProbe is what ProbeBroker found: uplink's report, named here for
// the commands, which know the agent and not the uplink.
type BrokerProbe = uplink.ProbeReport

// ProbeBroker checks the config's broker as the agent would use it
// (uplink.Probe): the connection, TLS against ca_file, the gateway's
// credentials, and a subscribe and publish on its own topics, under a
// client id of its own. It touches nothing else: the running agent's
// session and retained messages are left alone.
func ProbeBroker(ctx context.Context, cfg *config.Config) BrokerProbe {
	ucfg, err := cfg.Session(nil)
	if err != nil {
		return uplink.ProbeReport{Broker: cfg.Uplink.Broker, Steps: []uplink.ProbeStep{{Name: "config", Detail: err.Error(),
			Hint: "the agent could not start either: fix the uplink section"}}}
	}
	return uplink.Probe(ctx, ucfg)
}

// BuildStamp is when this binary's sources were committed and where that
// came from (hw.BuildStamp): for `hearth version`.
func BuildStamp() (time.Time, string) { return hw.BuildStamp() }
