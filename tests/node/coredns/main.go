// Command coredns is the real node's cluster DNS: CoreDNS with only the plugins a
// cluster-internal resolver needs. There is deliberately no `forward` plugin: pods get
// answers for cluster names and nothing for the rest, so no query leaves this machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order in which the plugins handle a query, as in CoreDNS's plugin.cfg.
var directives = []string{
	"bind", "ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
