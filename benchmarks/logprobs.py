"""Token log-probs of a train step's batch, forward + backward: jaxevo against full logits and TRL's way.

    python benchmarks/logprobs.py [--rows 8] [--prompt 70] [--completion 96] [--dtype bfloat16]

One micro-batch of the online demo's shape on SmolLM2-135M's LM head (hidden 576, vocabulary
49,152): `rows` sequences of a prompt (`prompt` +- 8 tokens) and a completion (between half and
all of `completion` tokens), right-padded to a multiple of 32 as `train.rollout.rollout_batch`
lays them out. Random hidden states and head; the loss is a weighted sum of the log-probs, and
every arm returns the gradients of both. Arms, measured in the same run (best of `--repeat`):

  * jaxevo: `jaxevo.losses.token_logprobs` (logits only over the rows' label spans, in chunks);
  * XLA, full logits: the [B, T, V] f32 logits, log-softmax and gather, as a plain JAX step does;
  * torch, TRL's way (when torch is installed): TRL left-pads the prompts so the completions end
    together and computes logits for the last `logits_to_keep` = longest completion positions,
    then `selective_log_softmax` (logits in f32); torch's autograd for the backward.

Prints ms per forward + backward and each arm's ratio to jaxevo, with the machine's facts.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from decode_step import best_of
from generate_e2e import cpu_facts
from jaxevo.losses import naive_token_logprobs, token_logprobs

E, V = 576, 49152


def best_ms(fn, repeat: int) -> float:
    fn()  # compile / warm up
    return best_of(fn, repeat) * 1e3


def batch(rows: int, prompt: int, completion: int, seed: int = 0):
    """Right-padded labels [B, T] (-100 off the completions), and each row's (start, end)."""
    rng = np.random.default_rng(seed)
    spans = []
    for _ in range(rows):
        p = prompt + int(rng.integers(-8, 9))
        spans.append((p - 1, p - 1 + int(rng.integers(completion // 2, completion + 1))))
    t = -(-(max(e for _, e in spans) + 1) // 32) * 32  # prompt + completion, as rollout_batch
    labels = np.full((rows, t), -100, np.int32)
    for i, (s, e) in enumerate(spans):
        labels[i, s:e] = rng.integers(0, V, e - s)
    return labels, spans


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=70)
    ap.add_argument("--completion", type=int, default=96)
    ap.add_argument("--chunk", type=int, default=128, help="jaxevo's train.logprob_chunk")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    labels, spans = batch(args.rows, args.prompt, args.completion)
    b, t = labels.shape
    dt = jnp.dtype(args.dtype)
    k = jax.random.key(0)
    h = jax.random.normal(k, (b, t, E)).astype(dt)
    w = (jax.random.normal(jax.random.fold_in(k, 1), (E, V)) * 0.05).astype(dt)
    weights = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, (b, t)), jnp.float32)
    lab = jnp.asarray(labels)

    def step(fn):
        g = jax.jit(jax.value_and_grad(lambda h, w: jnp.sum(fn(h, w, lab) * weights), argnums=(0, 1)))
        return lambda: jax.block_until_ready(g(h, w))

    ours = lambda h, w, l: token_logprobs(h, w, l, chunk_size=args.chunk)  # noqa: E731
    arms = {"jaxevo token_logprobs": best_ms(step(ours), args.repeat),
            "XLA, full f32 logits": best_ms(step(naive_token_logprobs), args.repeat)}
    np.testing.assert_allclose(np.asarray(jax.jit(ours)(h, w, lab)),
                               np.asarray(jax.jit(naive_token_logprobs)(h, w, lab)), rtol=2e-5, atol=2e-5)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tdt = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
        keep = max(e - s for s, e in spans)
        # TRL's layout: prompts left-padded, completions right-padded, all ending within `keep`
        th = torch.tensor(np.asarray(h.astype(jnp.float32))[:, :keep], dtype=tdt, requires_grad=True)
        tw = torch.tensor(np.asarray(w.astype(jnp.float32)), dtype=tdt, requires_grad=True)
        tl = torch.tensor(np.where(labels[:, :keep] < 0, 0, labels[:, :keep]), dtype=torch.long)
        tm = torch.tensor(np.asarray(weights)[:, :keep])

        def trl():
            logits = (th @ tw).float()  # [B, keep, V]
            picked = torch.gather(logits, -1, tl.unsqueeze(-1)).squeeze(-1)
            lp = picked - torch.logsumexp(logits, dim=-1)  # selective_log_softmax, f32 logits
            (lp * tm).sum().backward()
            th.grad = tw.grad = None
        arms[f"torch {torch.__version__}, TRL's logits_to_keep"] = best_ms(trl, args.repeat)

    base = arms["jaxevo token_logprobs"]
    facts = cpu_facts()
    print(f"{facts}  jax {jax.__version__}  rows {b} x T {t}, labelled positions per row "
          f"{[e - s for s, e in spans]}, {args.dtype}")
    for name, ms in arms.items():
        print(f"  {name:45s} {ms:8.1f} ms fwd+bwd   {ms / base:5.2f}x jaxevo's time")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "machine": facts, "T": t, "spans": spans, "ms": arms}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
