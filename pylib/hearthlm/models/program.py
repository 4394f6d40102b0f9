"""The layer program: a family's network as a short list of native ops over named
float32 activation buffers [tokens, width]. A family file builds one per model; the
native side (csrc/program_bindings.cpp) checks it once and runs it whole inside one
parallel region. `print(program)` shows the network, one op per line."""
from __future__ import annotations

from typing import Optional

from .. import _kernels as K
from ..weights import Linear, Norm


class Program:
    def __init__(self, buffers: dict, input: str, output: str):
        """buffers: name -> width, in the order forward() takes them; `input` receives
        the embedded tokens, `output` holds the final hidden states."""
        self.buffers = dict(buffers)
        self.input, self.output = input, output
        self.ops: list[dict] = []

    def _op(self, op: str, **fields) -> None:
        self.ops.append({"op": op, **fields})

    def norm(self, out: str, x: str, norm: Norm, group: Optional[int] = None) -> None:
        """out = norm(x) over each row of `group` values (default: the whole row);
        a [groups, group] weight gives each group of the row its own weights."""
        group = group or self.buffers[x]
        weight = norm.weight.reshape(-1, group)
        bias = None if norm.bias is None else norm.bias.reshape(-1, group)
        self._op("norm", out=out, **{"in": x}, weight=weight, bias=bias, eps=float(norm.eps), group=group)

    def matmul(self, x: str, **outs: Linear) -> None:
        """buffer name = x · linearᵀ for each keyword, as one task list."""
        self._op("matmul", **{"in": x}, outs=list(outs),
                 linears=[(lin.weight, lin.bias, lin.wtype) for lin in outs.values()])

    def rope(self, x: str, heads: int, head_dim: int, rotary_dim: int, table: int = 0) -> None:
        self._op("rope", **{"in": x}, heads=heads, head_dim=head_dim, rotary_dim=rotary_dim, table=table)

    def kv_store(self, k: str, v: str, layer: int) -> None:
        self._op("kv_store", k=k, v=v, layer=layer)

    def attention(self, out: str, q: str, layer: int, heads: int, scale: float, window: int = 0,
                  softcap: float = 0.0) -> None:
        self._op("attention", out=out, q=q, layer=layer, heads=heads, scale=float(scale), window=int(window),
                 softcap=float(softcap))

    def glu(self, out: str, gate: str, up: str, activation: str) -> None:
        self._op("glu", out=out, gate=gate, up=up, activation=activation)

    def add(self, out: str, x: str, factor: float = 1.0) -> None:
        """out += factor * x (a residual connection)."""
        self._op("add", out=out, **{"in": x}, factor=float(factor))

    def scale(self, out: str, factor: float) -> None:
        self._op("scale", out=out, factor=float(factor))

    def moe(self, out: str, x: str, router: Linear, experts: list, intermediate: int, top_k: int,
            norm_topk: bool) -> None:
        """out = Σ over each token's top_k experts of p_e · down_e(silu(gate_e(x)) * up_e(x)),
        p = softmax(x · routerᵀ) (renormalized over the chosen when norm_topk); experts:
        (gate, up, down) Linears of `intermediate` rows (gate, up) and columns (down)."""
        self._op("moe", out=out, **{"in": x}, router=(router.weight, router.bias, router.wtype),
                 experts=[tuple((lin.weight, lin.bias, lin.wtype) for lin in e) for e in experts],
                 intermediate=int(intermediate), top_k=int(top_k), norm_topk=bool(norm_topk))

    def bytes_per_token(self) -> int:
        """Bytes of the matrices one token reads: every matmul's, and of a moe op its
        router and top_k experts (all experts are the same size)."""
        total = 0
        for op in self.ops:
            if op["op"] == "matmul":
                total += sum(lin[0].nbytes for lin in op["linears"])
            elif op["op"] == "moe":
                total += op["router"][0].nbytes + op["top_k"] * sum(lin[0].nbytes for lin in op["experts"][0])
        return total

    def native(self, layer_groups: list, n_kv_heads: int, head_dim: int) -> "K.LayerProgram":
        """layer_groups: each layer's cache group (kv_cache.cache_groups)."""
        return K.LayerProgram(list(self.buffers.items()), self.ops, layer_groups, n_kv_heads, head_dim)

    def __str__(self) -> str:
        lines = [f"buffers: {', '.join(f'{n}[{w}]' for n, w in self.buffers.items())}"]
        return "\n".join(lines + [self.describe(op) for op in self.ops])

    def describe(self, op: dict) -> str:
        kind = op["op"]
        if kind == "norm":
            what = "layernorm" if op["bias"] is not None else "rmsnorm"
            per = f" per {op['group']}" if op["group"] != self.buffers[op["in"]] else ""
            return f"{op['out']} = {what}({op['in']}){per}"
        if kind == "matmul":
            types = sorted({lin[2] for lin in op["linears"]})
            return f"{', '.join(op['outs'])} = {op['in']} · Wᵀ ({', '.join(types)})"
        if kind == "rope":
            return f"rope({op['in']}, rotary_dim={op['rotary_dim']}, table={op['table']})"
        if kind == "kv_store":
            return f"cache[{op['layer']}] <- {op['k']}, {op['v']}"
        if kind == "attention":
            extra = "".join(f", {k}={op[k]}" for k in ("window", "softcap") if op[k])
            return f"{op['out']} = attention({op['q']}, cache[{op['layer']}], scale={op['scale']:.4g}{extra})"
        if kind == "glu":
            return f"{op['out']} = {op['activation']}({op['gate']}) * {op['up']}"
        if kind == "add":
            factor = f"{op['factor']:.4g} * " if op["factor"] != 1.0 else ""
            return f"{op['out']} += {factor}{op['in']}"
        if kind == "moe":
            norm = ", renormalized" if op["norm_topk"] else ""
            types = sorted({lin[2] for e in op["experts"] for lin in e})
            return (f"{op['out']} = moe({op['in']}, top {op['top_k']} of {len(op['experts'])} experts{norm}) "
                    f"({', '.join(types)})")
        return f"{op['out']} *= {op['factor']:.4g}"
