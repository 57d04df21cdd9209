"""The study's conclusions as checks on our numbers, and the results README that states them.

Each check takes the finished records (`facealign.study.report.RunRecord`) and the detector-miss
handlings (headline first) and returns (verdict, Markdown text with the numbers). The verdict uses the
headline protocol; the study's own protocol is quoted beside it.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from facealign.training.config import upgrade_run_config

STUDY_SETTINGS = {"input_size": 224, "batch_size": 64, "epochs": 40}
BOX_TEXT = {"detector": "dlib's HOG detector, the detection that matches the face (`detector`)",
            "gt": "the ground-truth landmarks' box (`gt`)",
            "seed": "the study's: detector box grown to hold every ground-truth landmark (`seed`, leaks the answer)"}


def _nme(r, m) -> float:
    return r.evals[m]["summary"]["nme"]


def _group(r) -> str:
    """Backbone and its initialisation, e.g. 'efficientnet_b0 (random init)'."""
    return f"{r.config['config']['backbone']} ({r.init} init)"


def _groups(records) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        if r.config is not None:
            out.setdefault(_group(r), []).append(r)
    return out


def _parts(r) -> tuple[str, str]:
    c = r.config["config"]
    return c["head"], c["loss"]


def _verdict(flags: list[bool]) -> str:
    if not flags:
        return "not measured"
    return "confirmed" if all(flags) else "refuted" if not any(flags) else "mixed"


def heatmaps_beat_regression(records, misses):
    flags, lines = [], []
    for g, runs in _groups(records).items():
        by = {k: [r for r in runs if _parts(r)[0] == k] for k in ("heatmap", "regression")}
        if not by["heatmap"] or not by["regression"]:
            continue
        means = {k: [float(np.mean([_nme(r, m) for r in v])) for m in misses] for k, v in by.items()}
        flags.append(means["heatmap"][0] < means["regression"][0])
        lines.append(f"- {g}: mean NME of the heatmap runs {means['heatmap'][0]:.4f} vs regression "
                     f"{means['regression'][0]:.4f} (study protocol: {means['heatmap'][-1]:.4f} vs "
                     f"{means['regression'][-1]:.4f}); best heatmap {min(_nme(r, misses[0]) for r in by['heatmap']):.4f}, "
                     f"best regression {min(_nme(r, misses[0]) for r in by['regression']):.4f}.")
    return _verdict(flags), "\n".join(lines)


def efficientnet_beats_convnext(records, misses):
    runs = {(r.config["config"]["backbone"], *_parts(r)): r for r in records
            if r.config is not None and r.init == "random"}
    pairs = [(runs[("efficientnet_b0", h, l)], runs[("convnextv2_nano", h, l)]) for (b, h, l) in runs
             if b == "efficientnet_b0" and ("convnextv2_nano", h, l) in runs]
    if not pairs:
        return "not measured", "- needs both backbones' runs with the same head and loss."
    wins = sum(_nme(e, misses[0]) < _nme(c, misses[0]) for e, c in pairs)
    means = [(float(np.mean([_nme(e, m) for e, _ in pairs])), float(np.mean([_nme(c, m) for _, c in pairs])))
             for m in misses]
    text = (f"- mean NME over the {len(pairs)} matched head/loss pairs: EfficientNet-B0 {means[0][0]:.4f} vs "
            f"ConvNeXtV2-Nano {means[0][1]:.4f} (study protocol: {means[-1][0]:.4f} vs {means[-1][1]:.4f}); "
            f"EfficientNet is better in {wins} of {len(pairs)} pairs.")
    return ("confirmed" if means[0][0] < means[0][1] else "refuted"), text


def wing_beats_mse(records, misses):
    flags, lines = [], []
    for g, runs in _groups(records).items():
        reg = {_parts(r)[1]: r for r in runs if _parts(r)[0] == "regression"}
        if "mse" not in reg:
            continue
        for loss in ("wing", "awing"):
            if loss in reg:
                flags.append(_nme(reg[loss], misses[0]) < _nme(reg["mse"], misses[0]))
                lines.append(f"- {g}: regression + {loss} {_nme(reg[loss], misses[0]):.4f} vs + mse "
                             f"{_nme(reg['mse'], misses[0]):.4f} (study protocol: {_nme(reg[loss], misses[-1]):.4f} "
                             f"vs {_nme(reg['mse'], misses[-1]):.4f}).")
    return _verdict(flags), "\n".join(lines) or "- needs regression runs with mse and wing or awing."


def every_model_beats_dlib(records, misses):
    dlib = next((r for r in records if r.name == "dlib"), None)
    models = [r for r in records if r.config is not None]
    if dlib is None or not models:
        return "not measured", "- needs dlib's row and at least one model."
    lines = []
    for m in misses:
        better = [r.name for r in models if _nme(r, m) < _nme(dlib, m)]
        lines.append(f"- misses -> {m}: dlib NME {_nme(dlib, m):.4f}; {len(better)} of {len(models)} models beat it"
                     + (f" ({', '.join(better)})" if better else "") + ".")
    flags = [_nme(r, misses[0]) < _nme(dlib, misses[0]) for r in models]
    return _verdict(flags), "\n".join(lines)


def best_is_b0_heatmap_mse(records, misses):
    models = [r for r in records if r.config is not None]
    study = [r for r in models if r.init == "random"]
    if not study:
        return "not measured", "- needs the random-init grid."
    lines = []
    for label, pool in (("random-init grid (the study's 12)", study), ("all runs", models)):
        best = min(pool, key=lambda r: _nme(r, misses[0]))
        best_auc = max(pool, key=lambda r: r.evals[misses[0]]["summary"]["auc"])
        lines.append(f"- {label}: lowest NME {best.name} ({_nme(best, misses[0]):.4f}); highest AUC@0.08 "
                     f"{best_auc.name} ({best_auc.evals[misses[0]]['summary']['auc']:.4f}).")
    b0 = next((r for r in study if r.name == "efficientnet_b0-heatmap-mse"), None)
    if b0 is not None:
        rank = sorted(study, key=lambda r: _nme(r, misses[0])).index(b0) + 1
        lines.append(f"- efficientnet_b0-heatmap-mse ranks {rank} of {len(study)} in the random-init grid "
                     f"(NME {_nme(b0, misses[0]):.4f}).")
    verdict = "confirmed" if min(study, key=lambda r: _nme(r, misses[0])).name == "efficientnet_b0-heatmap-mse" \
        else "refuted"
    return verdict, "\n".join(lines)


CHECKS: dict[str, Callable] = {
    "Heatmaps beat direct regression": heatmaps_beat_regression,
    "EfficientNet beats ConvNeXt (on average)": efficientnet_beats_convnext,
    "Wing / Adaptive Wing beat MSE for regression": wing_beats_mse,
    "Every model beats dlib": every_model_beats_dlib,
    "The best model is EfficientNet-B0 + heatmap + MSE": best_is_b0_heatmap_mse,
}


def auc_threshold_for(errors, target: float) -> float | None:
    """The threshold t at which AUC@t = 1 - mean(min(e, t)) / t reaches `target` (None if never below 10)."""
    e = np.asarray(errors, np.float64)

    def area(t):
        return 1.0 - np.mean(np.minimum(e, t)) / t

    lo, hi = 1e-6, 10.0
    if area(hi) < target:
        return None
    for _ in range(100):  # AUC@t is non-decreasing in t: bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if area(mid) < target else (lo, mid)
    return hi


def _md_table(rows: list[dict]) -> str:
    cols = list(rows[0])

    def cell(v):
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|",
                      *("| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows)])


DEVICE_NOTE = (
    "- Trained on a lent GPU ({device}) by `benchmarks/device_grid.sh`, from packs of the same photos "
    "(`make device-grid-prep`: crops at context 0.1, training faces JPEG q75 and test faces q90, so that the "
    "device call's 64 MiB carry holds them), on the packed HOG boxes for training and validation "
    "(`train_box detector`: the seed preset's `seed` boxes would need a second pack), and with the ImageNet "
    "Lite0 weights from an fp16 copy (`benchmarks/half_weights.py`: at most 4.9e-4 relative rounding). "
    "Evaluated on the test pack's crops with the stored boxes; dlib's rows, where present, on the photos with "
    "the same boxes (pack and photos differ by 0.3% for the shipped `default`: docs/training.md).")

_VERDICT_COLS = ("experiment", "backbone init", "NME ({m})", "AUC@0.08 ({m})", "FR@0.08 ({m})", "best epoch",
                 "val NME change, last 3 epochs")


def _preset_sections(presets: list[dict]) -> list[str]:
    """Sub-folder reports at other presets (the study's `seed` settings on a GPU): they lead the report."""
    out = []
    for p in presets:
        m = p["misses"][0]
        cols = [c.format(m=m) for c in _VERDICT_COLS]
        rows = sorted(({c: r.get(c) for c in cols} for r in p["rows"]), key=lambda r: r[cols[2]])
        out += [f"## At {p['label']}", "",
                f"Its own report, with every column, plot and check: [{p['folder']}/]({p['folder']}/README.md). "
                "Its rows cannot join the table below: a device grid evaluates one detector-miss handling "
                f"(`{m}`). Best first:", "", _md_table(rows), ""]
    return out


def _by_preset(verdicts_here: dict[str, str], facts: dict) -> list[str]:
    """Each conclusion's verdict here ({title: verdict}, as checked above) and at the other presets; robust = the
    same all-pairs verdict at each."""
    presets = facts.get("presets") or []
    if not presets:
        return []
    here = Counter(r.get("preset") for r in facts["rows"] if r.get("preset") not in (None, "-")).most_common(1)
    label = f"`{here[0][0]}` preset (this table)" if here else "this table"
    lines = ["## The conclusions at each preset", "",
             "A verdict is `confirmed` or `refuted` only when every pair agrees, so a conclusion is **robust** "
             "when it has the same such verdict at every preset, and not robust otherwise.", "",
             "| conclusion | " + label + " | " + " | ".join(f"`{p['folder']}` preset" for p in presets)
             + " | robust |", "|---|---|" + "---|" * len(presets) + "---|"]
    for title, verdict in verdicts_here.items():
        verdicts = [verdict] + [p["verdicts"][title] for p in presets]
        robust = "yes" if len(set(verdicts)) == 1 and verdicts[0] in ("confirmed", "refuted") else "no"
        lines.append(f"| {title} | " + " | ".join(verdicts) + f" | {robust} |")
    return lines + [""]


def render_readme(records, facts: dict, checks: dict[str, Callable]) -> str:
    """The results README: setup, table, plots, each conclusion checked, the AUC note, what is missing."""
    misses, split, t = facts["misses"], facts["split"], facts["threshold"]
    trained = [r for r in records if r.config is not None]
    cfg = upgrade_run_config(trained[0].config["config"]) if trained else {}  # records before the rename: "size"
    env = trained[0].config.get("environment", {}) if trained else {}
    grid = facts.get("grid") or {}
    settings = ", ".join(f"{k} {cfg.get(k)}" for k in ("input_size", "batch_size", "epochs", "lr", "context",
                                                       "train_box", "val_box", "val_fraction") if k in cfg)
    differs = {k: (cfg.get(k), v) for k, v in STUDY_SETTINGS.items() if cfg and cfg.get(k) != v}
    out = ["# The study's grid, rerun: results and conclusions", "",
           "Generated from the run folders by `facealign experiments` (`facealign.study.report`); do not edit.",
           "Rebuild every file here, byte for byte, from the copies in `runs/` (FOLDER: this report's folder, "
           "e.g. results/study or results/study/seed):", "",
           "    facealign experiments --report-only -o FOLDER", ""]
    commands = grid.get("commands") or ([grid["command"]] if grid.get("command") else [])
    if commands:
        out += ["Produced by:", "", *(f"    {c}" for c in commands), ""]
    out += ["## Setup", "",
            f"- Training: {settings}; backbone init as in the table (`random` = the study's grid as run here, "
            "`ImageNet` = EfficientNet-Lite0's ImageNet weights, the only ones obtainable offline); `preset` names "
            "the `facealign train` preset a row's settings match, `device` where it trained (a GPU: "
            "`benchmarks/device_grid.sh`, imported by `facealign experiments --import`).",
            f"- Machine: {env.get('cpu', {}).get('cpu', '?')}, {env.get('threads', '?')} threads, "
            f"torch {env.get('torch', '?')}, "
            + (f"GPU {env.get('device_name')}." if env.get("cuda") else "no GPU.") if env else "- Machine: unknown."]
    if grid.get("device"):
        out.append(DEVICE_NOTE.format(device=grid["device"]))
    if differs:
        out.append("- **Not the study's settings:** " + ", ".join(f"{k} {a} (study: {b})" for k, (a, b) in
                                                                  differs.items())
                   + ". The study's recipe (`--preset seed`) needs a GPU; this is the CPU preset chosen so the "
                     "grid fits on 2 cores.")
    boxes = BOX_TEXT.get(facts["protocol"], f"the `{facts['protocol']}` protocol")
    out += [f"- Test set: `{split}` (helen/testset); boxes: {boxes}. "
            f"Headline: detector misses get the ground-truth box (`{misses[0]}`), so every method sees the same "
            f"boxes" + (f"; second column: the study's protocol (`{misses[-1]}`: a miss gets the whole image)."
                        if len(misses) > 1 else " (the only handling a device grid evaluates: its packs hold no "
                                                "whole images)."),
            f"- Metrics (docs/metrics.md): NME = mean point error / inter-ocular (outer eye corners) distance; "
            f"AUC@{t:g} = area under the CED up to {t:g}, divided by {t:g}; FR@{t:g} = share of faces with NME > {t:g}.",
            "", *_preset_sections(facts.get("presets") or []),
            "## Table", "", "Best headline NME first. Machine-readable: `results.json`, `results.csv`. `train min` "
            "is the wall time summed over epochs on the machine as it was, other jobs included, so it is an upper "
            "bound; `CPU ms/face` is the median of 20 single-face calls (batch 1) at evaluation time.", "",
            _md_table(facts["rows"]), ""]
    if facts.get("notes"):
        out += ["Baselines (no network of the grid):", "", *(f"- {n}" for n in facts["notes"]), ""]
    out += [f"![CED, misses -> {misses[0]}](ced_all.png)", ""]
    out += [f"![CED, misses -> {m}](ced_all_{m}.png)" for m in misses[1:]] + [""]
    out += ["Per experiment (one curve per miss handling): " +
            ", ".join(f"[{r.name}](ced_{r.name}.png)" for r in records) + ".", ""]
    if trained:
        judged = [r for r in trained if len(r.history) > 3]
        still = [r for r in judged if _falling(r)]
        verdict = (f"validation NME still fell by more than 2% over the last 3 epochs in {len(still)} of "
                   f"{len(judged)} runs ({', '.join(r.name for r in still)}); those would gain from a longer "
                   "schedule." if still else
                   f"validation NME changed by less than 2% over the last 3 epochs in all {len(judged)} runs.")
        if len(judged) < len(trained):
            verdict += f" {len(trained) - len(judged)} runs have 3 epochs or fewer and are not judged."
        out += ["## Training curves", "", "![validation NME and training loss per epoch](curves.png)", "",
                "Convergence: " + verdict, ""]
        budget = time_budget(trained)
        if budget:
            out += [budget, ""]
    out += ["## The study's conclusions, checked", "",
            "The study tested on 300W and Menpo; here only helen/testset (300W's common subset, 230 faces) is "
            "available, so every verdict is for that set.", ""]
    verdicts = {}
    for title, check in checks.items():
        verdicts[title], text = check(records, misses)
        out += [f"### {title}: **{verdicts[title]}**", "", text, ""]
    out += _by_preset(verdicts, facts)
    best = min(trained, key=lambda r: _nme(r, misses[0])) if trained else None
    out += ["## Why the study's AUC values (0.93-0.98) cannot be AUC@0.08", "",
            f"AUC@t is exactly 1 - mean(min(e, t)) / t over the per-face errors e (`facealign.evaluation.metrics.auc`). "
            f"An AUC@0.08 of 0.93 therefore needs mean(min(e, 0.08)) <= 0.0056: a mean error under 0.56% of the "
            f"inter-ocular distance, under half a pixel on average for eyes 80 px apart."
            f" Published AUC@0.08 on 300W is about 0.55-0.72."]
    if best is not None:
        out[-1] += (f" Here the best model ({best.name}) has AUC@{t:g} {facts['auc'][best.name]:.4f} "
                    f"and dlib {facts['auc'].get('dlib', float('nan')):.4f}.")
        t95 = facts["auc_t95"].get(best.name)
        if t95 is not None:
            out[-1] += (f" The same errors give an AUC of 0.95 only at a threshold of {t95:.3f}: the study's "
                        "numbers fit a much larger threshold or a different normalisation, which it does not state.")
    out += ["", f"We report NME, AUC@{t:g} and FR@{t:g} with inter-ocular normalisation, as defined in "
            "docs/metrics.md, and the CED curves above.", ""]
    if facts["missing"]:
        out += ["## Not in this report", "", "Not finished (no final.json or no evaluation): " +
                ", ".join(facts["missing"]) + ".", ""]
    return "\n".join(out)


def time_budget(trained, hours: float = 2.5) -> str:
    """How many epochs per run a `hours` grid allows, from the fastest measured epoch of each backbone.

    The fastest epoch (min of `epoch_s` over every epoch of every run with that backbone) is the one least
    slowed by other jobs. Only runs with `epoch_s` in their history count."""
    fastest: dict[str, float] = {}
    for r in trained:
        secs = [h["epoch_s"] for h in r.history if h.get("epoch_s")]
        if secs:
            b = r.config["config"]["backbone"]
            fastest[b] = min(fastest.get(b, float("inf")), min(secs))
    timed = [r for r in trained if r.config["config"]["backbone"] in fastest]
    if not timed:
        return ""
    grid_epoch = sum(fastest[r.config["config"]["backbone"]] for r in timed)
    epochs = {r.config["config"]["epochs"] for r in timed}
    per = ", ".join(f"{b} {s:.0f} s" for b, s in sorted(fastest.items()))
    return (f"Time budget: the fastest measured epoch per backbone is {per} (at size "
            f"{upgrade_run_config(timed[0].config['config'])['input_size']}, batch {timed[0].config['config']['batch_size']}). One epoch of "
            f"each of these {len(timed)} runs therefore takes at least {grid_epoch / 60:.1f} min, so a {hours:g} h "
            f"grid allows at most {int(hours * 3600 // grid_epoch)} epochs per run; the runs here used "
            f"{'/'.join(str(e) for e in sorted(epochs))}.")


def _falling(r, k: int = 3, tol: float = 0.02) -> bool:
    vals = [h["val_nme"] for h in r.history]
    return len(vals) > k and vals[-1] < vals[-1 - k] * (1 - tol)
