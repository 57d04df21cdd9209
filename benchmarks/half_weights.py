"""Write an fp16 copy of a torch state-dict file (integer tensors kept), for the device carry's 64 MiB.

`make device-grid-prep` carries the ImageNet Lite0 weights this way: 18.8 MB -> 9.5 MB. The loader copies
them into fp32 parameters (load_state_dict casts), so only the rounding differs: at most 4.9e-4 relative
(|w16 - w32| / (|w32| + 1e-3)) on efficientnet-lite0-57934424.pth. Runs that start from this copy record
the fact in the grid's log; CPU runs start from the full-precision file.
    usage: python benchmarks/half_weights.py SRC.pth DST.pth
"""
import os
import sys

import torch


def main(src: str, dst: str) -> None:
    state = torch.load(src, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    tmp = f"{dst}.tmp"
    torch.save(half, tmp)
    os.replace(tmp, dst)  # never a half-written weights file
    print(f"{dst}: {os.path.getsize(src)} -> {os.path.getsize(dst)} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.rsplit("usage: ", 1)[1].strip())
    main(*sys.argv[1:])
