"""The F3 child of the Megatron family: `python -m autoscout_jax.megatron_child`.

Where it sits: started by `megatron_profile.MegatronProfileEvaluator` through
`local/runner.run_candidates` (a crash, hang or OOM kill costs one
candidate; a fresh child takes the rest). It imports torch, megatron-core
and child_protocol.py, nothing else of autoscout_jax (so it runs under any
Python that has torch with CUDA and megatron-core, e.g. a GPU image whose
JAX differs from the search's).

What one candidate is: megatron-core's own training step of a GPT
(`GPTModel` with the local layer spec: plain PyTorch attention and MLP, no
Transformer Engine) on this process's one GPU, bf16 with fp32 gradient
reduction, Megatron-core's DistributedDataParallel (gradient buffers and
buckets: `ddp_bucket_size`, `overlap_grad_reduce`, `overlap_param_gather`)
and its optimizer (`get_megatron_optimizer`: Adam, fp32 main parameters,
`use_distributed_optimizer`), the micro-batches of one global batch run by
megatron-core's no-pipelining schedule (`get_forward_backward_func`), and
the candidate's recompute (`recompute_granularity` none / selective /
full with `recompute_method` and `recompute_num_layers`). One process is one
rank: tensor, pipeline, context and expert degrees above 1 need more ranks
and are reported as 'invalid' with that reason; so is torch FSDP2, which
this child does not wire.

Timing: `warmup_steps` untimed steps, then `timed_steps` steps, each timed
between two `torch.cuda.synchronize()`; metrics: step_time_s (median),
every step in extra['step_times_s'], peak_mem_bytes
(torch.cuda.max_memory_allocated over build and steps), the loss of the
last step. Without Transformer Engine (a plain PyTorch image) the local
spec's attention is unfused (the s x s scores are stored) and Megatron's
fused softmax and bias kernels are off: this measures that stack, not TE's.
A CUDA out-of-memory error is failure 'oom' (and the child
frees what it can and goes on with the next candidate).

Protocol (child_protocol.py): request {"candidates", "options":
{"warmup_steps", "timed_steps", "seed"}, "faults", "model": {num_layers,
hidden_size, num_heads, num_kv_heads, ffn_hidden_size, vocab_size,
seq_len, gated_mlp}, "global_batch"}; 'ready' carries the versions and
the device; a machine without CUDA or megatron-core gets 'fatal' naming
what is missing.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Mapping, TextIO

from autoscout_jax.child_protocol import child_main, emit, failed, failed_at, serve_candidates

ONE_RANK = ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size",
            "expert_model_parallel_size", "expert_tensor_parallel_size", "data_parallel_size")


def _versions() -> dict[str, Any]:
  import torch
  from importlib import metadata
  out: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                         "cuda": torch.version.cuda}
  try:
    out["megatron_core"] = metadata.version("megatron-core")
  except metadata.PackageNotFoundError:
    out["megatron_core"] = None
  return out


def _join() -> str:
  """One rank on one GPU: a process group of one (NCCL) and megatron-core's
  model-parallel state with every degree 1."""
  import torch
  import torch.distributed as dist
  from megatron.core import parallel_state
  if not dist.is_initialized():
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    try:
      dist.init_process_group("nccl", world_size=1, rank=0, device_id=torch.device("cuda", 0))
    except Exception as e:  # noqa: BLE001 -- a VM without NCCL's transports: one rank needs no peer
      print(f"megatron_child: NCCL process group failed ({type(e).__name__}: {e}); using gloo", file=sys.stderr)
      os.environ["MASTER_PORT"] = str(_free_port())
      dist.init_process_group("gloo", world_size=1, rank=0)
  if not parallel_state.model_parallel_is_initialized():
    parallel_state.initialize_model_parallel(1, 1)
  return dist.get_backend()


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _refusal(values: Mapping[str, Any], global_batch: int) -> str | None:
  over = {k: values[k] for k in ONE_RANK if int(values.get(k, 1) or 1) != 1}
  if over:
    return ("this child runs one rank on one GPU; degrees above 1 need more ranks: "
            + ", ".join(f"{k}={v}" for k, v in sorted(over.items())))
  if values.get("use_torch_fsdp2"):
    return "use_torch_fsdp2 is not wired in this child (Megatron-LM's own DDP and optimizer only)"
  mbs = int(values.get("micro_batch_size", 1))
  if mbs < 1 or global_batch % mbs:
    return f"micro_batch_size {mbs} does not divide the global batch {global_batch}"
  return None


def _configs(model: Mapping[str, Any], values: Mapping[str, Any], seed: int):
  import torch
  from megatron.core.distributed import DistributedDataParallelConfig
  from megatron.core.optimizer import OptimizerConfig
  from megatron.core.transformer.transformer_config import TransformerConfig
  rc = str(values.get("recompute_granularity", "none"))
  recompute: dict[str, Any] = {}
  if rc == "selective":
    recompute = dict(recompute_granularity="selective")
  elif rc == "full":
    recompute = dict(recompute_granularity="full", recompute_method=str(values.get("recompute_method", "uniform")),
                     recompute_num_layers=int(values.get("recompute_num_layers", 1)))
  tcfg = TransformerConfig(
      num_layers=int(model["num_layers"]), hidden_size=int(model["hidden_size"]),
      num_attention_heads=int(model["num_heads"]),
      num_query_groups=int(model.get("num_kv_heads") or model["num_heads"]),
      ffn_hidden_size=int(model["ffn_hidden_size"]), gated_linear_unit=bool(model.get("gated_mlp", False)),
      bf16=True, params_dtype=torch.bfloat16, pipeline_dtype=torch.bfloat16, autocast_dtype=torch.bfloat16,
      hidden_dropout=0.0, attention_dropout=0.0,
      # No Transformer Engine or Megatron's compiled kernels on a plain torch
      # image: the local spec's unfused softmax and unfused bias/activation.
      masked_softmax_fusion=False, bias_activation_fusion=False, bias_dropout_fusion=False,
      gradient_accumulation_fusion=False, **recompute)
  dist_opt = bool(values.get("use_distributed_optimizer", False))
  ddp = DistributedDataParallelConfig(
      grad_reduce_in_fp32=True, use_distributed_optimizer=dist_opt,
      overlap_grad_reduce=bool(values.get("overlap_grad_reduce", False)),
      overlap_param_gather=bool(values.get("overlap_param_gather", False)) and dist_opt,
      bucket_size=int(values["ddp_bucket_size"]) if values.get("ddp_bucket_size") else None)
  ocfg = OptimizerConfig(optimizer="adam", lr=1e-4, weight_decay=0.01, bf16=True, params_dtype=torch.bfloat16,
                         use_distributed_optimizer=dist_opt, clip_grad=1.0)
  return tcfg, ddp, ocfg


def measure_one(item: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
  import torch
  model_cfg, gb = request["model"], int(request["global_batch"])
  values = item["values"]
  why = _refusal(values, gb)
  if why:
    return failed("invalid", why)
  opts = request.get("options") or {}
  warmup, timed, seed = int(opts.get("warmup_steps", 2)), int(opts.get("timed_steps", 5)), int(opts.get("seed", 0))
  stage = "config"
  try:
    from megatron.core import tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, finalize_model_grads
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer.module import Float16Module
    tcfg, ddp_cfg, ocfg = _configs(model_cfg, values, seed)
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    stage = "build"
    s, vocab = int(model_cfg["seq_len"]), int(model_cfg["vocab_size"])
    gpt = GPTModel(tcfg, get_gpt_layer_local_spec(), vocab_size=vocab, max_sequence_length=s,
                   pre_process=True, post_process=True, share_embeddings_and_output_weights=False)
    # As Megatron-LM wraps a bf16 model: every parameter in bf16 (the learned
    # position embedding is built in fp32), inputs cast in, outputs fp32 out.
    gpt = Float16Module(tcfg, gpt).cuda()
    model = DistributedDataParallel(tcfg, ddp_cfg, gpt)
    opt = get_megatron_optimizer(ocfg, [model])
    tcfg.no_sync_func = model.no_sync
    tcfg.finalize_model_grads_func = finalize_model_grads
    if ddp_cfg.overlap_param_gather:
      tcfg.param_sync_func = model.start_param_sync
    mbs = int(values.get("micro_batch_size", 1))
    n_micro = gb // mbs
    gen = torch.Generator(device="cuda").manual_seed(seed)
    tokens = torch.randint(0, vocab, (n_micro, mbs, s + 1), device="cuda", generator=gen)
    pos = torch.arange(s, device="cuda").unsqueeze(0).expand(mbs, s)
    mask = torch.ones(mbs, s, device="cuda", dtype=torch.float32)

    def batches():
      i = 0
      while True:
        t = tokens[i % n_micro]
        i += 1
        yield t[:, :-1], t[:, 1:]

    def forward_step(it, m):
      x, y = next(it)
      out = m(x, pos, None, labels=y)

      def loss_fn(per_token):
        loss = (per_token.float() * mask).sum() / mask.sum()
        return loss, {"lm loss": loss.detach()}
      return out, loss_fn

    fb = get_forward_backward_func()
    last = {"loss": None}

    def step():
      model.zero_grad_buffer()
      opt.zero_grad()
      losses = fb(forward_step_func=forward_step, data_iterator=batches(), model=[model],
                  num_microbatches=n_micro, seq_length=s, micro_batch_size=mbs, forward_only=False)
      opt.step()
      if losses:
        last["loss"] = float(sum(float(d["lm loss"]) for d in losses) / len(losses))

    stage = "warmup"
    for _ in range(warmup):
      step()
    torch.cuda.synchronize()
    stage = "steps"
    times = []
    for _ in range(timed):
      torch.cuda.synchronize()
      t0 = time.perf_counter()
      step()
      torch.cuda.synchronize()
      times.append(time.perf_counter() - t0)
    st = statistics.median(times)
    return {"feasible": True, "step_time_s": st, "tokens_per_s": gb * s / st,
            "peak_mem_bytes": float(torch.cuda.max_memory_allocated()),
            "extra": {"step_times_s": times, "loss": last["loss"], "num_microbatches": n_micro,
                      "optimizer": type(opt).__name__}}
  except torch.cuda.OutOfMemoryError as e:
    return failed_at(stage, "oom", e)
  except Exception as e:  # noqa: BLE001 -- a failed candidate is data
    return failed_at(stage, "crash", e)


def _release() -> None:
  """After each candidate (its frame is gone): free the model, optimizer
  and cached blocks so the next candidate starts from an empty device."""
  import gc
  import torch
  gc.collect()
  torch.cuda.empty_cache()


def serve(request: Mapping[str, Any], out: TextIO) -> int:
  try:
    import torch
    if not torch.cuda.is_available():
      emit(out, event="fatal", error="no CUDA device visible to torch (megatron-core's training step needs one)")
      return 1
    import megatron.core  # noqa: F401
    torch.cuda.set_device(0)
    backend = _join()
  except Exception as e:  # noqa: BLE001
    emit(out, event="fatal", error=f"megatron-core cannot start here: {type(e).__name__}: {e}")
    return 1
  prov = {**_versions(), "device_kind": torch.cuda.get_device_name(0), "device_count": 1,
          "platform": "gpu", "runner": "megatron-core", "process_group": backend}
  emit(out, event="ready", provenance=prov)
  return serve_candidates(request, out, lambda item: measure_one(item, request), after_each=_release)


if __name__ == "__main__":
  sys.exit(child_main(serve))
