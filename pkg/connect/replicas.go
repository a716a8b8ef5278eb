package connect

import (
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// replicasScheme names the resolver of an authority that lists several
// herd-server replicas.
const replicasScheme = "herd-replicas"

// target turns an authority into the gRPC target to dial. One address (or
// a gRPC target such as dns:///host:port) is dialled as it is. Several,
// "10.1.0.1:42113,10.1.0.2:42113", are herd-server replicas over one
// database: calls are spread over the ones that answer (round_robin), a
// replica that goes away is left out until it is back, and a stream cut
// by its loss is taken up by the caller on another. Each address's TLS
// name is its host, unless Config.ServerName names one for all.
func target(authority string) (string, []grpc.DialOption, error) {
	if !strings.Contains(authority, ",") {
		return authority, nil, nil
	}
	var addrs []resolver.Address
	seen := map[string]bool{}
	for _, a := range strings.Split(authority, ",") {
		a = strings.TrimSpace(a)
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return "", nil, fmt.Errorf("server address %q in %q: want host:port, comma-separated for replicas", a, authority)
		}
		if seen[a] {
			return "", nil, fmt.Errorf("server address %q twice in %q", a, authority)
		}
		seen[a] = true
		addrs = append(addrs, resolver.Address{Addr: a, ServerName: host})
	}
	r := manual.NewBuilderWithScheme(replicasScheme)
	r.InitialState(resolver.State{Addresses: addrs})
	return replicasScheme + ":///herd-server", []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	}, nil
}
