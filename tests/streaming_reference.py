"""An independent float64 numpy model of the session semantics, written without any of
hearthlm's cache code: per layer it keeps lists of *unrotated* keys and values; a
context shift deletes entries [n_keep, n_keep + drop) and every key is rotated at its
current index when attended. hearthlm instead caches rotated keys in a ring and
re-rotates them on a shift; both must give the same logits."""
import numpy as np


def assert_follows(session, ref, ids) -> None:
    """Feed ids one at a time to a hearthlm session and to a reference: the same tokens
    are kept after every shift, and the logits agree within 2e-5 of the largest."""
    for t in ids:
        logits, expected = session.feed([t]), ref.feed(t)
        assert session.tokens == ref.tokens
        np.testing.assert_allclose(logits, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


class StreamingReference:
    def __init__(self, folder, n_ctx, n_keep, n_discard):
        import torch
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.p = {k: v.detach().double().numpy() for k, v in hf.state_dict().items()}
        c = hf.config
        self.c = c
        self.n_heads, self.n_kv = c.num_attention_heads, c.num_key_value_heads
        self.hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        rope = c.rope_parameters
        self.rot = int(self.hd * rope.get("partial_rotary_factor", 1.0))
        self.inv_freq = 1.0 / rope["rope_theta"] ** (np.arange(0, self.rot, 2) / self.rot)
        self.layer_norm = c.model_type == "stablelm"
        self.eps = c.layer_norm_eps if self.layer_norm else c.rms_norm_eps
        self.n_ctx, self.n_keep, self.n_discard = n_ctx, n_keep, n_discard
        self.tokens = []
        self.keys = [[] for _ in range(c.num_hidden_layers)]    # unrotated, [n_kv, hd] each
        self.values = [[] for _ in range(c.num_hidden_layers)]

    def norm(self, x, prefix):
        w = self.p[prefix + ".weight"]
        if self.layer_norm:
            return (x - x.mean()) / np.sqrt(x.var() + self.eps) * w + self.p[prefix + ".bias"]
        return x / np.sqrt((x * x).mean() + self.eps) * w

    def linear(self, x, prefix):
        y = self.p[prefix + ".weight"] @ x
        return y + self.p[prefix + ".bias"] if prefix + ".bias" in self.p else y

    def rotate(self, x, pos):  # x: [heads, hd], rotate-half on the first self.rot dims
        a = pos * self.inv_freq
        cos, sin = np.cos(a), np.sin(a)
        out, h = x.copy(), self.rot // 2
        out[:, :h] = x[:, :h] * cos - x[:, h:self.rot] * sin
        out[:, h:self.rot] = x[:, h:self.rot] * cos + x[:, :h] * sin
        return out

    def mlp(self, h, prefix):
        g = self.linear(h, prefix + ".gate_proj")
        return self.linear(g / (1 + np.exp(-g)) * self.linear(h, prefix + ".up_proj"), prefix + ".down_proj")

    def moe(self, h, prefix):  # experts as transformers holds them: gate_up [E, 2I, H], down [E, H, I]
        p = np.exp(self.linear(h, prefix + ".gate") - self.linear(h, prefix + ".gate").max())
        p /= p.sum()
        chosen = np.argsort(-p)[:self.c.num_experts_per_tok]
        weights = p[chosen] / (p[chosen].sum() if self.c.norm_topk_prob else 1.0)
        out = np.zeros_like(h)
        for e, w in zip(chosen, weights):
            g, u = np.split(self.p[prefix + ".experts.gate_up_proj"][e] @ h, 2)
            out += w * (self.p[prefix + ".experts.down_proj"][e] @ (g / (1 + np.exp(-g)) * u))
        return out

    def feed_batch(self, tokens):
        """Make room for the whole batch at once (one shift), then run its tokens."""
        overflow = len(self.tokens) + len(tokens) - self.n_ctx
        if overflow > 0:
            drop = min(max(overflow, self.n_discard), len(self.tokens) - self.n_keep)
            sl = slice(self.n_keep, self.n_keep + drop)
            del self.tokens[sl]
            for lst in self.keys + self.values:
                del lst[sl]
        return [self._run(t) for t in tokens]

    def feed(self, token):
        return self.feed_batch([token])[0]

    def _run(self, token):
        pos = len(self.tokens)
        self.tokens.append(token)
        x = self.p["model.embed_tokens.weight"][token]
        rep = self.n_heads // self.n_kv
        for i in range(self.c.num_hidden_layers):
            pre = f"model.layers.{i}"
            h = self.norm(x, pre + ".input_layernorm")
            q = self.linear(h, pre + ".self_attn.q_proj").reshape(self.n_heads, self.hd)
            k = self.linear(h, pre + ".self_attn.k_proj").reshape(self.n_kv, self.hd)
            v = self.linear(h, pre + ".self_attn.v_proj").reshape(self.n_kv, self.hd)
            if pre + ".self_attn.q_norm.weight" in self.p:  # Qwen3: RMSNorm per head
                q = np.stack([self.norm(qh, pre + ".self_attn.q_norm") for qh in q])
                k = np.stack([self.norm(kh, pre + ".self_attn.k_norm") for kh in k])
            self.keys[i].append(k)
            self.values[i].append(v)
            q = self.rotate(q, pos)
            K = np.stack([self.rotate(kj, j) for j, kj in enumerate(self.keys[i])])  # [n, n_kv, hd]
            V = np.stack(self.values[i])
            out = np.zeros((self.n_heads, self.hd))
            for hh in range(self.n_heads):
                s = K[:, hh // rep] @ q[hh] / np.sqrt(self.hd)
                w = np.exp(s - s.max())
                out[hh] = w @ V[:, hh // rep] / w.sum()
            x = x + self.linear(out.reshape(-1), pre + ".self_attn.o_proj")
            h = self.norm(x, pre + ".post_attention_layernorm")
            x = x + (self.moe(h, pre + ".mlp") if pre + ".mlp.gate.weight" in self.p else self.mlp(h, pre + ".mlp"))
        x = self.norm(x, "model.norm")
        head = self.p.get("lm_head.weight", self.p["model.embed_tokens.weight"])
        return head @ x
