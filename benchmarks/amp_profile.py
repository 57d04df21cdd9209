"""Where bf16 autocast wins and loses on this CPU: one training step of the `default` model, fp32 vs bf16.

Times 3 alternating steps of each (batch 32, 160 px, channels_last, 1 thread by default), then prints
torch.profiler's top operators for one step of each. On an AMX Xeon (docs/benchmarks-training.md) bf16
made the convolutions' forward faster and their backward (depthwise) slower.

    python benchmarks/amp_profile.py [--threads 1]
"""
import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from facealign.hardware import cpu_has_fast_bf16, cpu_summary
from facealign.training.losses import build_loss, compute_loss
from facealign.models import build_model

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
torch.set_num_threads(args.threads)
print(cpu_summary(), "native bf16:", cpu_has_fast_bf16())
m = build_model("tf_efficientnet_lite0", "fpn").to(memory_format=torch.channels_last).train()
opt = torch.optim.AdamW(m.parameters(), 1e-4)
spec = build_loss("heatmap", "integral_bce")
x = torch.randn(32, 3, 160, 160).contiguous(memory_format=torch.channels_last)
y = torch.rand(32, 68, 2)


def step(dtype):
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        out = m(x)
    loss = compute_loss(spec, {k: v.float() for k, v in out.items()}, y, 1.0)
    opt.zero_grad()
    loss.backward()
    opt.step()


times = {None: [], torch.bfloat16: []}
for dtype in times:
    step(dtype)  # warm-up: kernel selection
for _ in range(3):
    for dtype in times:
        t = time.perf_counter()
        step(dtype)
        times[dtype].append(time.perf_counter() - t)
for dtype, ts in times.items():
    print(f"{dtype or 'fp32'}: img/s per step {[round(32 / t, 1) for t in ts]}")
for dtype in times:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(dtype)
    print(dtype or "fp32")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
