// Token sampling over the full vocabulary: an optional token mask (grammar constraints),
// penalties, temperature, top-k, top-p, min-p, then a draw from a seeded xoshiro256**
// generator. Every buffer is sized to the
// vocabulary once, in the constructor; sample() allocates nothing.
#pragma once
#include <cstdint>
#include <vector>

namespace hearthlm {

struct SamplerParams {
  float temperature = 0.8f;       // 0 = greedy argmax (after penalties)
  int32_t top_k = 40;             // 0 = off
  float top_p = 0.95f;            // 1 = off
  float min_p = 0.05f;            // 0 = off; relative to the most likely token
  float repeat_penalty = 1.0f;    // 1 = off; divides positive logits, multiplies negative
  int32_t repeat_last_n = 64;     // penalty window: the last n accepted tokens
  float presence_penalty = 0.0f;  // subtracted once from every token in the window
  float frequency_penalty = 0.0f; // subtracted per occurrence in the window
};

struct Candidate {
  float logit;  // after penalties; replaced by the unnormalised probability
  int32_t id;
};

class Sampler {
 public:
  Sampler(int64_t vocab, const SamplerParams& params, uint64_t seed);

  // mask: nullptr, or bits over the vocabulary in uint32 words [ceil(vocab / 32)]
  // (token i allowed iff bit i % 32 of word i / 32 is set), applied before anything
  // else: a masked-out token is never chosen, and penalties and filters see only the
  // allowed ones.
  // logits[vocab] -> the chosen token id; -1 if the mask allows no token.
  int32_t sample(const float* logits, const uint32_t* mask);
  // The distribution sample() draws from: fills ids/probs (normalised, most likely
  // first when top-k or top-p sorted them) and returns how many there are (0 if the
  // mask allows no token).
  int64_t distribution(const float* logits, const uint32_t* mask, int32_t* ids, float* probs);
  // After sample(): the chosen token's log-probability under the distribution it was
  // drawn from, and that distribution's min(k, size) most likely tokens, most likely
  // first, in ids[k] / logprobs[k]; returns how many were written. Reorders the
  // candidates, so call it once per sample().
  int64_t sampled_logprobs(int64_t k, float* chosen, int32_t* ids, float* logprobs);
  // Appends tokens to the penalty window (keeps the last repeat_last_n).
  void accept(const int32_t* ids, int64_t n);
  void clear_history();

  int64_t vocab() const { return vocab_; }

 private:
  // Fills cand_[0, n) with the tokens that survive the filters, probabilities
  // unnormalised (sum in *total); returns n. Greedy returns the argmax alone.
  int64_t filter(const float* logits, const uint32_t* mask, double* total);
  const float* prepared(const float* logits, const uint32_t* mask);
  int64_t top_k_candidates(const float* l, int64_t k);
  int64_t top_p_candidates(int64_t n, double need);
  uint64_t next_u64();

  int64_t vocab_;
  SamplerParams p_;
  uint64_t rng_[4];
  std::vector<Candidate> cand_;    // [vocab]
  std::vector<float> work_;        // [vocab] masked and penalised logits
  std::vector<int32_t> counts_;    // [vocab] occurrences in the window, 0 between calls
  std::vector<int32_t> history_;   // ring of the last repeat_last_n accepted tokens
  int64_t history_len_ = 0, history_head_ = 0;
  int64_t last_n_ = 0;             // the last sample(): candidates, their total, the chosen one's mass
  double last_total_ = 1.0, last_chosen_ = 1.0;
};

}  // namespace hearthlm
