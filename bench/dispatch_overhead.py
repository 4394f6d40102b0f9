"""Per-token Python + dispatch overhead: decode time of SmolLM2-135M's layer structure
(30 layers, same head counts) with tiny matrices, so weights and attention cost ~0.
`python bench/dispatch_overhead.py [DTYPE [FFN]]`: the weights' dtype (f32 by default;
quantized weights add an activation quantization before each matmul) and the FFN width
(64 by default: one token's forward then runs on one thread, below the parallel
threshold; 1024 makes it run on every thread, so the barriers between ops count)."""
import sys, time, numpy as np, statistics
import hearthlm
from hearthlm import shapes
dtype = sys.argv[1] if len(sys.argv) > 1 else None
ffn = int(sys.argv[2]) if len(sys.argv) > 2 else 64
name = "overhead-30" if ffn == 64 else f"overhead-30-ffn{ffn}"
shapes.SHAPES[name] = dict(architecture="LlamaForCausalLM", hidden_size=72, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, intermediate_size=ffn, vocab_size=64, tie_word_embeddings=True)
folder = shapes.random_model_folder(name, "f32")
for threads in (1, 2):
    m = hearthlm.load(folder, dtype=dtype, n_threads=threads)
    s = m.session(n_ctx=600)
    logits = s.feed(list(range(8)))
    times = []
    for _ in range(500):
        t = time.perf_counter(); logits = s.feed([int(np.argmax(logits))]); times.append(time.perf_counter() - t)
    print(f"threads={threads}: {statistics.median(times)*1e3:.3f} ms per token for 30 layers "
          f"({statistics.median(times)/30*1e6:.1f} us per layer)")
