package runner

// sched decides which waiting jobs start: at most one job per BMC at a
// time (BMCs serve few sessions and some misbehave under two), at most
// limit jobs overall; first come, first served among the startable ones,
// so one busy or hanging BMC never holds back jobs for the others.
// It is pure bookkeeping: Run starts what it returns.
type sched struct {
	limit   int
	running int
	busy    map[string]bool // BMC key -> a job of it runs
	waiting []Job
}

func newSched(limit int) *sched {
	return &sched{limit: max(limit, 1), busy: map[string]bool{}}
}

// add queues j and returns the jobs to start now.
func (s *sched) add(j Job) []Job {
	s.waiting = append(s.waiting, j)
	return s.pick()
}

// done marks the job of BMC key ended and returns the jobs to start now.
func (s *sched) done(key string) []Job {
	if s.busy[key] {
		delete(s.busy, key)
		s.running--
	}
	return s.pick()
}

func (s *sched) pick() []Job {
	var start []Job
	kept := s.waiting[:0]
	for _, j := range s.waiting {
		k := j.key()
		if s.running < s.limit && !s.busy[k] {
			s.busy[k] = true
			s.running++
			start = append(start, j)
			continue
		}
		kept = append(kept, j)
	}
	// Clear the tail so dropped jobs are not kept alive by the array.
	for i := len(kept); i < len(s.waiting); i++ {
		s.waiting[i] = Job{}
	}
	s.waiting = kept
	return start
}
