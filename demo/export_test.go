package demo

// InstanceCount is the registry's count, for the external tests.
func (s *Server) InstanceCount() int { return s.instances.count() }

const MaxParamsBytes = maxParamsBytes

// InstanceIDs lists the registry's instances.
func (s *Server) InstanceIDs() (ids []string) {
	s.instances.mu.Lock()
	defer s.instances.mu.Unlock()
	for id := range s.instances.byID {
		ids = append(ids, id)
	}
	return ids
}

// DestroyInstance destroys id as its TTL would.
func (s *Server) DestroyInstance(id string) { s.instances.destroy(id, false) }
