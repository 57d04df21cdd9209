"""How many faces a training or evaluation run found, used and dropped, by reason.

Training and evaluation print `format_counts` and record the dict of `face_counts` (training: in
run_dir/config.json under `data_counts`; evaluation: in each split's summary under `counts`). The numbers
always add up: found = used + the dropped faces of every reason.

- found: annotation files (.pts) of the split(s), usable or not;
- dropped, by reason: the data layer's skip kinds for defective files (`facealign.data.layouts`: unreadable
  .pts, wrong point count, no image for .pts, unreadable image, ...), `detector miss` (training with
  `drop_undetected`, evaluation with `--miss skip`) and `undecodable image` (pixel data that failed to decode
  after the header read fine);
- used: per part (training / validation, or evaluated).
"""
from __future__ import annotations

from collections import Counter

DETECTOR_MISS = "detector miss"
UNDECODABLE = "undecodable image"


def face_counts(split: str, faces: int, skipped: list[tuple[str, str]], used: dict[str, int],
                dropped: dict[str, int] | None = None) -> dict:
    """The counts record of one run's split(s).

    faces: usable faces the layout found in the split(s); skipped: the split's (path, reason) defective files
    (`DatasetIndex.split_skipped`); used: part -> faces used; dropped: further reason -> faces left out.
    """
    reasons = Counter(reason.split(": ", 1)[0] for _, reason in skipped)
    reasons.update({k: v for k, v in (dropped or {}).items() if v})
    counts = {"split": split, "found": faces + len(skipped), "used": sum(used.values()), "parts": dict(used),
              "dropped": dict(reasons.most_common())}
    lost = counts["found"] - counts["used"] - sum(counts["dropped"].values())
    if lost > 0:  # a face dropped for a reason not named above: still counted, never silent
        counts["dropped"]["other"] = lost
    return counts


def format_counts(counts: dict) -> str:
    """One line: "faces of 'train': 12 found, 9 used (training 7, validation 2), 3 dropped (2 detector miss, ...)"."""
    parts = ", ".join(f"{k} {n}" for k, n in counts["parts"].items())
    n_dropped = sum(counts["dropped"].values())
    reasons = ", ".join(f"{n} {k}" for k, n in counts["dropped"].items())
    return (f"faces of {counts['split']!r}: {counts['found']} found, {counts['used']} used ({parts}), "
            f"{n_dropped} dropped" + (f" ({reasons})" if reasons else ""))


def split_skipped(index, split: str) -> list[tuple[str, str]]:
    """The defective files of a split or '+'-joined splits of a `DatasetIndex`."""
    return [x for name in split.split("+") for x in index.split_skipped.get(name, [])]
