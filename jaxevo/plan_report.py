"""`jaxevo plan`'s report: the plan of `jaxevo.plan.make_plan` as text, per device unless noted."""

from __future__ import annotations

from typing import Any

GiB = 1024 ** 3


def _g(x: float) -> str:
    return f"{x / GiB:7.2f} GiB"


def format_plan(plan: dict[str, Any]) -> str:
    """Human-readable report (per device unless noted)."""
    chip = plan["chip"]
    tr = plan["train"]
    est = plan["estimate"]["train"]
    L = [f"model {plan['model']}: {plan['params'] / 1e9:.2f} B params",
         f"target {plan['accelerator']}: {plan['devices']} x {chip['name']} "
         f"({chip['hbm_bytes'] / GiB:.1f} GiB HBM, {chip['peak_bf16_flops'] / 1e12:.0f} TFLOP/s bf16)",
         f"compiled for: {plan['compiled_for']}", f"mesh {plan['mesh']}"]
    if plan["platform"] != "tpu":
        L.append("  NOTE: CPU compile — argument sizes are exact, temp/peak memory is XLA-CPU's "
                 "estimate (TPU fuses and schedules differently)")
    mem = tr["memory"]
    sb = tr["state_bytes"]
    tr.setdefault("cost", {}).setdefault("flops", 0.0)
    L += ["", f"train step ({tr['objective']}, views {tr['views']}): global batch {tr['global_batch']} "
          f"(micro {tr['micro_batch']}) x {tr['seq_len']} tokens = {tr['tokens_per_step']} tokens, "
          + (f"{tr['per_row']} completions a row (share_prompt), " if tr.get("per_row", 1) > 1 else "") +
          f"remat={tr['remat']}",
          f"  params (f32 master)   {_g(sb['params'])}",
          f"  optimizer state       {_g(sb['opt_state'])}",
          f"  batch                 {_g(sb['batch'])}",
          f"  temp (activations...) {_g(mem.get('temp', 0))}",
          *([f"  DOES NOT FIT: {tr['does_not_fit'].splitlines()[0][:400]}"] if tr.get("does_not_fit") else []),
          f"  peak estimate         {_g(mem.get('peak_estimate', 0))}  of {_g(chip['hbm_bytes'])} HBM "
          f"({100 * mem.get('peak_estimate', 0) / chip['hbm_bytes']:.0f} %)",
          f"  FLOPs/step/device: XLA {tr['cost']['flops'] / 1e12:.2f} T (scan body counted once), model (6N·tok + attn) "
          f"{tr['model_flops_per_device'] / 1e12:.2f} T, x{tr['hardware_flops_factor']:.2f} with recompute",
          f"  bounds: compute {est['t_compute_s']:.3f} s, FSDP all-gather/reduce-scatter "
          f"{est['t_fsdp_comm_s']:.3f} s (overlappable) -> MFU <= "
          f"{100 * est['mfu_upper_bound']:.0f} %, <= {est['tokens_per_s_at_bound']:.0f} tok/s"]
    if "sample" in plan:
        sm = plan["sample"]
        d = plan["estimate"]["decode"]
        L += ["", f"sampler ({sm['dtype']}, mesh {sm['mesh']}): {sm['batch']} rows, prompt bucket "
              f"{sm['prompt_bucket']}, {sm['new_tokens_bucket']} new tokens",
              f"  params {_g(sm['params_bytes_per_device'])}, KV cache {_g(sm['kv_cache_bytes_per_device'])}",
              f"  prefill: temp {_g(sm['prefill']['memory'].get('temp', 0))}, peak "
              f"{_g(sm['prefill']['memory'].get('peak_estimate', 0))}, XLA FLOPs "
              f"{sm['prefill']['cost']['flops'] / 1e12:.2f} T",
              f"  decode:  temp {_g(sm['decode']['memory'].get('temp', 0))}, peak "
              f"{_g(sm['decode']['memory'].get('peak_estimate', 0))}",
              f"  decode step bound: HBM {d['t_hbm_s'] * 1e3:.2f} ms, compute "
              f"{d['t_compute_s'] * 1e3:.2f} ms -> <= {d['tokens_per_s_bound']:.0f} tok/s (whole slice)"]
    if "online" in plan:
        on = plan["online"]
        L += ["", "online step (sampler and trainer colocated on the same devices):",
              *(f"  {k:<22}{_g(v)}" for k, v in on["resident"].items()),
              f"  + largest temp ({max(on['temps'], key=on['temps'].get)}) {_g(max(on['temps'].values()))}",
              f"  peak estimate         {_g(on['peak_estimate'])}  of {_g(on['hbm_bytes'])} HBM"
              f"{'' if on['fits'] else '  DOES NOT FIT colocated'}"]
    if plan.get("notes"):
        L += ["", plan["notes"].strip()]
    return "\n".join(L)
