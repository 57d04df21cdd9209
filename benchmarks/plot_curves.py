"""Validation NME and training loss per epoch of one or more run folders (their metrics.jsonl), one PNG.

    python benchmarks/plot_curves.py runs/ft224/tf_efficientnet_lite0-fpn-integral_bce -o results/runs/ft224/curves.png
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from facealign.atomic import atomic_path  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--reference", type=float, default=None, help="a horizontal line at this validation NME")
    p.add_argument("--reference-label", default="reference")
    args = p.parse_args()
    fig, (ax_nme, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for run in args.runs:
        history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
        epochs = [h["epoch"] for h in history]
        label = run.parent.name if run.name.count("-") >= 2 else run.name
        ax_nme.plot(epochs, [h["val_nme"] for h in history], marker=".", label=label)
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker=".", label=label)
    if args.reference is not None:
        ax_nme.axhline(args.reference, color="grey", linestyle="--", label=args.reference_label)
    ax_nme.set(xlabel="epoch", ylabel="validation NME (inter-ocular)", title="validation NME")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    for ax in (ax_nme, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(args.output) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
