package servertest

// Replica starts another herd-server on s's database and state directory
// (so the same CA, certificate, worker key and BMC key), with s's flags
// and extra after them, on ports of its own: a replica, as several
// herd-server behind a load balancer run. It stops when the test ends.
func (s *Server) Replica(extra ...string) *Server {
	s.t.Helper()
	r := &Server{t: s.t, StateDir: s.StateDir, DBURL: s.DBURL, Stderr: &Buffer{}, extra: append(append([]string{}, s.extra...), extra...)}
	r.start("127.0.0.1:0", "127.0.0.1:0")
	s.t.Cleanup(func() { r.Stop() })
	return r
}
