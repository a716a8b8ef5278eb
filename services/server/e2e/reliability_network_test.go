package e2e

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
)

// testSubnet is a random 10.x.y.0/24 prefix ("10.x.y.") for one test's
// veth pair, so concurrent tests' namespaces never share addresses.
func testSubnet() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return fmt.Sprintf("10.%d.%d.", 100+int(b[0])%100, b[1])
}

// TestReliabilityNetworkLoss (issue 16): the fleet's workers run in a
// network namespace of their own, joined by a veth pair to a namespace
// where herd-server's gRPC port is relayed (to the server on the host's
// loopback). Once half the reports are in, the workers' end of the veth is
// taken down (3 s short, 30 s full) and up again: in-flight calls hang and
// end DeadlineExceeded or Unavailable, new connections cannot be made,
// the workers retry with backoff, and once the link is back every report
// arrives, nothing twice: every workflow SUCCESS with exactly one RUNNING
// and one SUCCESS event per action.
func TestReliabilityNetworkLoss(t *testing.T) {
	outage := time.Duration(reliability.Size(3, 30)) * time.Second
	s := servertest.Start(t, "--log-level", "info")
	serverSide, workerSide := newNetns(t, "herd-nls-"), newNetns(t, "herd-nlw-")
	subnet := testSubnet()
	vethPair(t, serverSide, "nls0", subnet+"1/24", workerSide, "nlw0", subnet+"2/24")
	_, port, err := net.SplitHostPort(s.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	relayAddr := net.JoinHostPort(subnet+"1", port)
	relay(serverSide.listen(relayAddr), s.GRPC, nil, nil)

	f := newFleetVia(t, s, fleetSize(), fleetPeriod(), func(ca *x509.CertPool, token string) *grpc.ClientConn {
		return dialInNetns(t, workerSide, relayAddr, ca, token)
	})
	// answeredCut is how many reports were answered while the link was
	// down (past what was in flight): the fault did not land unless 0.
	var answeredCut int64
	var linkUp time.Time
	cut := fault{name: "veth down for " + outage.String(), do: func() (time.Time, time.Time) {
		away := time.Now()
		workerSide.ip("link", "set", "nlw0", "down")
		time.Sleep(200 * time.Millisecond)
		before := f.applied.Load()
		time.Sleep(outage - 200*time.Millisecond)
		answeredCut = f.applied.Load() - before
		workerSide.ip("link", "set", "nlw0", "up")
		linkUp = time.Now()
		return away, linkUp
	}}
	figures, o, lost, took := runWithFaults(t, f, []fault{cut})
	if answeredCut != 0 {
		lost++
		t.Errorf("%d reports were answered while the link was down: the fault did not land", answeredCut)
	}
	fg := figures[0]
	reliability.Record(t, reliability.Row{
		Case: "Network lost between the workers and herd-server",
		Done: fmt.Sprintf("%d simulated workers in a network namespace of their own, reaching herd-server over a veth pair (10.x, the other end's namespace relaying to the server's loopback port), one report per %v each, Unavailable and DeadlineExceeded retried with backoff as herd-worker does (each call given 30 s); at 1/2 of the reports the workers' end of the veth taken down for %v, then up",
			len(f.workers), f.period, outage),
		Volume: fmt.Sprintf("%d workflows × %d actions, %d reports (%d of them sent twice, as after a lost reply); %d action events recorded, %d workflows SUCCESS, in %v",
			len(f.workers), fleetActions, f.reports(), f.resent.Load(), o.events, o.succeeded, took.Round(100*time.Millisecond)),
		Lost:     lost,
		Recovery: fg.recovery - fg.down,
		Notes: fmt.Sprintf("recovery: from the link up to the first report answered; every worker had a report answered again %v after the link was up (calls hung on the dead link resume at TCP's next retransmission or end at their deadline); answers the workers got: %s (-race build)",
			f.allAnsweredAfter(linkUp).Round(10*time.Millisecond), f.seenCodes()),
	})
}

// dialInNetns is a worker's gRPC connection to addr made from inside ns,
// with the server's CA, the certificate's name (127.0.0.1) and token.
func dialInNetns(t *testing.T, ns *netns, addr string, ca *x509.CertPool, token string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca, ServerName: "127.0.0.1"})),
		grpc.WithPerRPCCredentials(connect.Bearer(token)),
		grpc.WithContextDialer(ns.dial))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
