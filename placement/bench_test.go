package placement_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/placement"
)

// loadedFleet is n ready followers with random loads, some keys each.
func loadedFleet(n int) []fleet.Member {
	r := rand.New(rand.NewPCG(1, 2))
	ms := make([]fleet.Member, n)
	for i := range ms {
		inst := r.Int64N(200)
		ms[i] = fleet.Member{Report: fleet.Report{Follower: fmt.Sprintf("follower-%d", i),
			Role: fleet.RoleFollower, State: fleet.StateReady, Instances: inst, Graphs: inst / 4}}
	}
	return ms
}

func benchKeys() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i], _ = fleet.DefinitionKey("posts", fmt.Appendf(nil, `{"page":%d,"sort":"new"}`, i))
	}
	return keys
}

// BenchmarkChoose is one placement among 10,000 ready followers with the
// ring already built (the ready set unchanged since the last placement):
// the hot path. Goal ≤ 2 µs, as the view's heap.
func BenchmarkChoose(b *testing.B) {
	view := placement.NewMembers(loadedFleet(10_000))
	p, err := placement.NewAffinity(placement.AffinityConfig{Target: 100})
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys()
	p.Choose(keys[0], view, nil) // builds the ring
	i := 0
	for b.Loop() {
		p.Choose(keys[i%len(keys)], view, nil)
		i++
	}
}

// BenchmarkRendezvous is the floor of rendezvous hashing over 10,000
// followers: one 64-bit mix per follower and the maximum, no bound, no
// allocation. It is why Affinity walks a ring instead.
func BenchmarkRendezvous(b *testing.B) {
	ms := loadedFleet(10_000)
	seeds := make([]uint64, len(ms))
	for i, m := range ms {
		seeds[i] = xxhash.Sum64String(m.Follower)
	}
	keys := benchKeys()
	i, best := 0, 0
	for b.Loop() {
		h := xxhash.Sum64String(keys[i%len(keys)])
		var top uint64
		for j, s := range seeds {
			if x := mix(h ^ s); x > top {
				top, best = x, j
			}
		}
		i++
	}
	_ = best
}

// mix is splitmix64's finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// BenchmarkRingBuild is the first placement after the ready set of 10,000
// followers changed: the snapshot and the ring rebuilt (paid once per
// change, not per placement).
func BenchmarkRingBuild(b *testing.B) {
	ms := loadedFleet(10_000)
	p, _ := placement.NewAffinity(placement.AffinityConfig{})
	key := benchKeys()[0]
	i := 0
	for b.Loop() {
		ms[0].Follower = fmt.Sprintf("follower-new-%d", i) // a new set each time
		p.Choose(key, placement.NewMembers(ms), nil)
		i++
	}
}
