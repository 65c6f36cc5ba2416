// Counter-based RNG (Philox4x32-10). A stream is (seed, stream id); draw i of a stream depends
// only on (seed, stream, i), so results are reproducible across runs and thread counts:
// parallel code gives each independent piece of work its own stream id (e.g. a hash of a
// parameter name, or a row index) instead of sharing one sequential generator.
// The full state is three integers, so it is trivially saved in checkpoints.
#pragma once
#include <cstdint>
#include <string>

namespace moessm {

// One Philox4x32-10 block: 4 random 32-bit words for (counter, key).
void philox4x32(uint64_t counter, uint64_t key, uint32_t out[4]);

uint64_t stream_id(const std::string& name);  // stable 64-bit hash (FNV-1a) of a name

class Rng {
 public:
  Rng(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  uint32_t next_u32();
  uint64_t next_u64();
  double uniform();                    // [0, 1), 53 random bits
  double uniform(double lo, double hi);
  double normal();                     // N(0, 1), Box-Muller
  uint64_t below(uint64_t n);          // uniform integer in [0, n), unbiased

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t counter() const { return counter_; }   // number of 32-bit words drawn so far
  void set_counter(uint64_t c) { counter_ = c; }

 private:
  uint64_t seed_, stream_, counter_ = 0;
};

}  // namespace moessm
