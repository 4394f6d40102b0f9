// A token mask (grammar constraints) comes first: masked-out logits become -inf, so
// penalties keep them there and every filter drops them.
// Order of the filters follows transformers: penalties, temperature, top-k, top-p, min-p.
// min-p is applied before top-p's sort, which gives the same set: both keep a
// most-likely-first prefix, min-p's threshold is relative to the top token (which
// top-p's renormalisation leaves unchanged), and top-p's mass is measured against the
// total after top-k. Filtering first leaves top-p fewer tokens to sort.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace hearthlm {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

bool more_likely(const Candidate& a, const Candidate& b) { return a.logit > b.logit; }

// Most of the vocabulary loses every comparison, so scans test a block of kBlock
// logits at once: an OR of comparisons, which the compiler turns into SIMD.
constexpr int64_t kBlock = 32;

bool any_above(const float* x, float threshold) {
  int any = 0;
  for (int64_t j = 0; j < kBlock; ++j) any |= x[j] > threshold;
  return any != 0;
}

// The shortest prefix of c (most likely first) whose mass reaches `need`; all if none.
int64_t prefix_reaching(const Candidate* c, int64_t n, double need) {
  double cum = 0.0;
  for (int64_t i = 0; i < n; ++i)
    if ((cum += c[i].logit) >= need) return i + 1;
  return n;
}

// out[i] = in[i] where the mask allows token i, else -inf.
void masked_copy(float* out, const float* in, const uint32_t* mask, int64_t n) {
  for (int64_t b = 0; b < n; b += 32) {
    const uint32_t bits = mask[b / 32];
    const int64_t e = std::min<int64_t>(b + 32, n);
    if (bits == 0xFFFFFFFFu) {
      std::copy(in + b, in + e, out + b);
    } else {
      for (int64_t j = b; j < e; ++j)
        out[j] = (bits >> (j - b)) & 1u ? in[j] : -INFINITY;
    }
  }
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock)
    if (any_above(x + i, x[best]))
      for (int64_t j = i; j < i + kBlock; ++j)
        if (x[j] > x[best]) best = j;
  for (; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace

Sampler::Sampler(int64_t vocab, const SamplerParams& params, uint64_t seed)
    : vocab_(vocab), p_(params), cand_(vocab), work_(vocab), counts_(vocab, 0),
      history_(std::max<int32_t>(params.repeat_last_n, 0)) {
  for (uint64_t& s : rng_) s = splitmix64(seed);
}

// xoshiro256** (Blackman & Vigna)
uint64_t Sampler::next_u64() {
  const uint64_t result = rotl(rng_[1] * 5, 7) * 9;
  const uint64_t t = rng_[1] << 17;
  rng_[2] ^= rng_[0];
  rng_[3] ^= rng_[1];
  rng_[1] ^= rng_[2];
  rng_[0] ^= rng_[3];
  rng_[2] ^= t;
  rng_[3] = rotl(rng_[3], 45);
  return result;
}

void Sampler::accept(const int32_t* ids, int64_t n) {
  const int64_t cap = static_cast<int64_t>(history_.size());
  if (cap == 0) return;
  for (int64_t i = std::max<int64_t>(0, n - cap); i < n; ++i) {
    history_[history_head_] = ids[i];
    history_head_ = (history_head_ + 1) % cap;
    history_len_ = std::min(history_len_ + 1, cap);
  }
}

void Sampler::clear_history() { history_len_ = history_head_ = 0; }

const float* Sampler::prepared(const float* logits, const uint32_t* mask) {
  const bool active = (p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f ||
                       p_.frequency_penalty != 0.0f) && history_len_ > 0;
  if (mask != nullptr)
    masked_copy(work_.data(), logits, mask, vocab_);
  else if (active)
    std::copy(logits, logits + vocab_, work_.begin());
  else
    return logits;
  if (!active) return work_.data();
  for (int64_t i = 0; i < history_len_; ++i) counts_[history_[i]]++;
  for (int64_t i = 0; i < history_len_; ++i) {
    const int32_t t = history_[i];
    const int32_t c = counts_[t];
    if (c == 0) continue;  // a repeat already handled
    float& l = work_[t];
    l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    l -= c * p_.frequency_penalty + p_.presence_penalty;
    counts_[t] = 0;
  }
  return work_.data();
}

// The k most likely tokens, most likely first: a min-heap of k scanned over the vocab.
int64_t Sampler::top_k_candidates(const float* l, int64_t k) {
  Candidate* c = cand_.data();
  for (int64_t i = 0; i < k; ++i) c[i] = {l[i], static_cast<int32_t>(i)};
  std::make_heap(c, c + k, more_likely);  // c[0] = the least likely kept
  auto offer = [&](int64_t i) {
    if (l[i] > c[0].logit) {
      std::pop_heap(c, c + k, more_likely);
      c[k - 1] = {l[i], static_cast<int32_t>(i)};
      std::push_heap(c, c + k, more_likely);
    }
  };
  int64_t i = k;
  for (; i + kBlock <= vocab_; i += kBlock)
    if (any_above(l + i, c[0].logit))
      for (int64_t j = i; j < i + kBlock; ++j) offer(j);
  for (; i < vocab_; ++i) offer(i);
  std::sort_heap(c, c + k, more_likely);
  return k;
}

int64_t Sampler::filter(const float* logits, const uint32_t* mask, double* total) {
  const float* l = prepared(logits, mask);
  Candidate* c = cand_.data();
  *total = 1.0;
  if (p_.temperature <= 0.0f) {
    const int64_t best = argmax(l, vocab_);
    if (l[best] == -INFINITY) return 0;  // the mask allows nothing
    c[0] = {1.0f, static_cast<int32_t>(best)};
    return 1;
  }
  int64_t n = vocab_;
  bool sorted = p_.top_k > 0 && p_.top_k < vocab_;
  if (sorted) {
    n = top_k_candidates(l, p_.top_k);
  } else {
    for (int64_t i = 0; i < n; ++i) c[i] = {l[i], static_cast<int32_t>(i)};
  }
  float max_logit = c[0].logit;
  if (!sorted)
    for (int64_t i = 1; i < n; ++i) max_logit = std::max(max_logit, c[i].logit);
  if (max_logit == -INFINITY) return 0;  // the mask allows nothing

  // Probabilities relative to the most likely token (which gets 1).
  const float inv_t = 1.0f / p_.temperature;
  double mass = 0.0;  // after top-k: top-p's reference
  for (int64_t i = 0; i < n; ++i) {
    c[i].logit = std::exp((c[i].logit - max_logit) * inv_t);
    mass += c[i].logit;
  }
  if (p_.min_p > 0.0f || mask != nullptr) {  // masked-out tokens have probability 0
    const float keep = std::max(p_.min_p, std::numeric_limits<float>::denorm_min());
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
      if (c[i].logit >= keep) c[m++] = c[i];
    n = m;
  }
  if (p_.top_p < 1.0f) {
    const double need = p_.top_p * mass;
    n = sorted ? prefix_reaching(c, n, need) : top_p_candidates(n, need);
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += c[i].logit;
  *total = sum;
  return n;
}

// Top-p over unsorted candidates without sorting them all: bucket the probabilities by
// their float bits (8 buckets per halving, from 1 down to 2^-32), find the bucket where
// the mass reaches `need`, and sort only the candidates in it and above.
int64_t Sampler::top_p_candidates(int64_t n, double need) {
  constexpr uint32_t kBuckets = 256;
  auto bucket = [](float p) {
    uint32_t bits;
    std::memcpy(&bits, &p, sizeof bits);
    return std::min((0x3F800000u - bits) >> 20, kBuckets - 1);  // p in [0, 1]
  };
  Candidate* c = cand_.data();
  double mass[kBuckets] = {};
  for (int64_t i = 0; i < n; ++i) mass[bucket(c[i].logit)] += c[i].logit;
  uint32_t last = 0;
  for (double cum = mass[0]; cum < need && last < kBuckets - 1;) cum += mass[++last];
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i)
    if (bucket(c[i].logit) <= last) std::swap(c[m++], c[i]);
  std::sort(c, c + m, more_likely);
  return prefix_reaching(c, m, need);
}

int32_t Sampler::sample(const float* logits, const uint32_t* mask) {
  double total = 0.0;
  const int64_t n = filter(logits, mask, &total);
  last_n_ = n;
  last_total_ = total;
  if (n == 0) return -1;
  const double r = static_cast<double>(next_u64() >> 11) * 0x1.0p-53 * total;
  double cum = 0.0;
  int64_t i = 0;
  while (i < n - 1 && (cum += cand_[i].logit) <= r) ++i;  // the last one if r rounded up to the total
  last_chosen_ = cand_[i].logit;
  return cand_[i].id;
}

int64_t Sampler::sampled_logprobs(int64_t k, float* chosen, int32_t* ids, float* logprobs) {
  *chosen = static_cast<float>(std::log(last_chosen_ / last_total_));
  k = std::min(k, last_n_);
  std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.begin() + last_n_, more_likely);
  for (int64_t i = 0; i < k; ++i) {
    ids[i] = cand_[i].id;
    logprobs[i] = static_cast<float>(std::log(cand_[i].logit / last_total_));
  }
  return k;
}

int64_t Sampler::distribution(const float* logits, const uint32_t* mask, int32_t* ids, float* probs) {
  double total = 0.0;
  const int64_t n = filter(logits, mask, &total);
  for (int64_t i = 0; i < n; ++i) {
    ids[i] = cand_[i].id;
    probs[i] = static_cast<float>(cand_[i].logit / total);
  }
  return n;
}

}  // namespace hearthlm
