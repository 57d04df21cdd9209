"""Landmark schemes (issue 25 item 7): the registry, user JSON schemes, flips, NME normalisers, .pts point counts and
the dlib refusal. The end-to-end run on 98-point data is in test_schemes_e2e.py."""
import json

import numpy as np
from PIL import Image
import pytest

from facealign.data import scheme as ibug
from facealign.data.layouts import index_dataset
from facealign.data.schemes import SCHEMES, SchemeError, get_scheme
from facealign.data.synthetic import make_300w_fixture, template_shape, wflw_template
from facealign.data.transforms import flip_order
from facealign.evaluation.metrics import evaluate_landmarks, per_image_nme

FIVE = {"name": "five", "num_points": 5, "mirror_pairs": [[0, 1], [3, 4]], "norm_points": [0, 1],
        "regions": {"eyes": [0, 1], "nose": [2], "mouth": [3, 4]}}


def five_file(tmp_path, **changes):
    path = tmp_path / "five.json"
    path.write_text(json.dumps({**FIVE, **changes}))
    return path


def test_registry_names_point_counts_and_normalisers():
    assert list(SCHEMES) == ["ibug68", "wflw98", "cofw29"]
    got = {n: (s.num_points, s.norm, s.norm_points) for n in SCHEMES for s in [get_scheme(n)]}
    assert got == {"ibug68": (68, "inter_ocular", (36, 45)), "wflw98": (98, "inter_ocular", (60, 72)),
                   "cofw29": (29, "inter_pupil", (16, 17))}
    assert get_scheme(None).name == get_scheme().name == "ibug68"
    for name in SCHEMES:  # a model card's copy (to_dict) rebuilds the same scheme
        assert get_scheme(json.loads(json.dumps(get_scheme(name).to_dict()))) == get_scheme(name)


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(SchemeError, match="unknown landmark scheme 'wflw'; valid: ibug68, wflw98, cofw29"):
        get_scheme("wflw")


def test_ibug68_keeps_the_68_point_constants():
    s = get_scheme("ibug68")
    np.testing.assert_array_equal(s.mirror_permutation, ibug.MIRROR_PERMUTATION)
    assert s.regions == {k: tuple(v) for k, v in ibug.REGIONS.items()}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_flip_twice_is_identity_on_an_asymmetric_labelling(name):
    s = get_scheme(name)
    pts = np.random.default_rng(3).uniform(0, 100, (2, s.num_points, 2)).astype(np.float32)  # no symmetry at all
    once = s.flip(pts, 120)
    assert not np.allclose(once, pts)
    np.testing.assert_allclose(s.flip(once, 120), pts, atol=1e-5)
    perm = s.mirror_permutation
    np.testing.assert_array_equal(perm[perm], np.arange(s.num_points))  # an involution
    # a point moves to its mirror partner, its x to width - 1 - x
    a, b = s.mirror_pairs[0]
    assert once[0, a, 0] == pytest.approx(119 - pts[0, b, 0]) and once[0, a, 1] == pts[0, b, 1]


def cofw_from_ibug(p68: np.ndarray) -> np.ndarray:
    """A COFW 29-point face from a 68-point one, point by point from COFW's definitions."""
    m = lambda *i: p68[list(i)].mean(0)  # noqa: E731
    return np.stack([p68[17], p68[26], p68[21], p68[22], p68[19], p68[19] + [0, 4], p68[24], p68[24] + [0, 4],
                     p68[36], p68[45], p68[39], p68[42], m(37, 38), m(40, 41), m(43, 44), m(46, 47),
                     m(*range(36, 42)), m(*range(42, 48)), p68[31], p68[35], p68[30], p68[33],
                     p68[48], p68[54], p68[51], p68[62], p68[66], p68[57], p68[8]])


@pytest.mark.parametrize("name, template", [("ibug68", template_shape), ("wflw98", wflw_template),
                                            ("cofw29", lambda: cofw_from_ibug(template_shape()))])
def test_mirrored_geometry_matches_the_permutation(name, template):
    """A mirror-symmetric face, flipped in a box centred on it, lands on itself only if the pairs are right."""
    s = get_scheme(name)
    face = template() * 100  # the unit box [0, 100]: centred in a 101-pixel-wide image (x -> 100 - x)
    assert face.shape == (s.num_points, 2)
    np.testing.assert_allclose(s.flip(face, 101), face, atol=1e-4)
    # the normalising points are a mirror pair; the right one lies on the image's left
    a, b = s.norm_points
    assert s.mirror_permutation[a] == b and face[a, 0] < face[b, 0]


def test_wflw_pairs_and_training_flip_order_agree():
    s = get_scheme("wflw98")
    assert (60, 72) in s.mirror_pairs and (96, 97) in s.mirror_pairs and (16, 16) not in s.mirror_pairs
    assert {i for p in s.mirror_pairs for i in p} | {16, 51, 52, 53, 54, 57, 79, 85, 90, 94} == set(range(98))
    coords = np.random.default_rng(0).uniform(0, 1, (98, 2))
    np.testing.assert_array_equal(flip_order(coords, s.mirror_permutation), coords[s.mirror_permutation])


def test_user_json_scheme_round_trip(tmp_path):
    s = get_scheme(str(five_file(tmp_path)))
    assert (s.name, s.num_points, s.mirror_pairs, s.norm, s.eye_corners) == ("five", 5, ((0, 1), (3, 4)),
                                                                                "inter_ocular", (0, 1))
    np.testing.assert_array_equal(s.mirror_permutation, [1, 0, 2, 4, 3])
    assert get_scheme(s.to_dict()) == s  # a model card's copy rebuilds the same scheme
    pupil = get_scheme(str(five_file(tmp_path, norm="inter_pupil")))
    assert pupil.pupils == ((0,), (1,)) and pupil.eye_corners is None


@pytest.mark.parametrize("changes, message", [
    ({"num_points": 0}, "num_points must be a positive integer"),
    ({"mirror_pairs": [[0, 5]]}, r"point indices \[5\] outside 0..4"),
    ({"mirror_pairs": [[0, 1], [1, 2]]}, r"mirror pair \[1, 2\] is not two distinct, unpaired points"),
    ({"norm_points": [0]}, "norm_points must be two point indices"),
    ({"norm": "eyes"}, "unknown norm 'eyes'; valid: inter_ocular, inter_pupil"),
    ({"points": 5}, "unknown scheme fields points"),
])
def test_malformed_user_schemes_are_one_line_errors(tmp_path, changes, message):
    with pytest.raises(SchemeError, match=message):
        get_scheme(str(five_file(tmp_path, **changes)))


def test_missing_or_broken_scheme_files(tmp_path):
    with pytest.raises(SchemeError, match="not found"):
        get_scheme(str(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SchemeError, match="not a JSON scheme"):
        get_scheme(str(tmp_path / "bad.json"))


def test_nme_uses_the_scheme_normalising_points():
    gt = np.zeros((98, 2))
    gt[60], gt[72] = [0, 0], [80, 0]  # WFLW's outer eye corners, 80 px apart
    gt[96], gt[97] = [10, 0], [50, 0]  # pupils 40 px apart
    assert per_image_nme(gt + [3, 4], gt, scheme="wflw98") == pytest.approx([5 / 80])
    assert per_image_nme(gt + [3, 4], gt, "inter_pupil", "wflw98") == pytest.approx([5 / 40])
    cofw = np.zeros((29, 2))
    cofw[8], cofw[9], cofw[16], cofw[17] = [0, 0], [100, 0], [20, 0], [70, 0]
    errors, summary = evaluate_landmarks(cofw + [6, 8], cofw, scheme="cofw29")  # the default: COFW's inter-pupil
    assert errors == pytest.approx([10 / 50]) and (summary["norm"], summary["scheme"]) == ("inter_pupil", "cofw29")
    assert per_image_nme(cofw + [6, 8], cofw, "inter_ocular", "cofw29") == pytest.approx([10 / 100])
    with pytest.raises(ValueError, match=r"shape \(N, 68, 2\)"):
        per_image_nme(gt, gt)  # 98 points under the default scheme


def test_user_scheme_without_pupils_says_which_normalisers_work(tmp_path):
    five = get_scheme(str(five_file(tmp_path)))
    with pytest.raises(ValueError, match="names no pupils: inter_pupil is undefined; valid: inter_ocular, bbox"):
        per_image_nme(np.zeros((5, 2)), np.zeros((5, 2)), "inter_pupil", five)


def test_layouts_read_the_scheme_point_count(tmp_path):
    root = make_300w_fixture(tmp_path / "d", {"train": 3, "test": 2}, size=96, scheme="wflw98")
    idx = index_dataset(root, num_points=98)
    assert {k: len(v) for k, v in idx.splits.items()} == {"test": 2, "train": 3}
    assert idx.split("train")[0].landmarks.shape == (98, 2)
    default = index_dataset(root)  # the 68-point default skips every file and says why
    assert not any(default.splits.values()) and len(default.skipped) == 5
    assert default.skipped[0][1] == "wrong point count: 98 points, the scheme has 68"


def test_data_summary_names_the_scheme_and_hints_at_it(tmp_path, capsys):
    from facealign.cli import main
    root = make_300w_fixture(tmp_path / "d", {"train": 2}, size=96, scheme="wflw98")
    assert main(["data", "summary", str(root), "--no-decode"]) == 1
    err = capsys.readouterr().err
    assert "2 wrong point count" in err and "--scheme ibug68 / wflw98 / cofw29" in err
    assert main(["data", "summary", str(root), "--no-decode", "--scheme", "wflw98"]) == 0
    assert "scheme: wflw98 (98 points)" in capsys.readouterr().out
    assert main(["data", "summary", str(root), "--scheme", "wflw"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line, no traceback


def test_dlib_comparisons_stay_68_point():
    from facealign.training.dlib_ert import make_config
    from facealign.evaluation.evaluate import check_scheme
    with pytest.raises(ValueError, match="trains the 68-point ibug68 scheme only"):
        make_config(scheme="wflw98")
    assert make_config(scheme="ibug68") == make_config()

    class Dlib:
        name = "dlib"
    check_scheme(Dlib(), None)
    check_scheme(Dlib(), "ibug68")
    with pytest.raises(ValueError, match="dlib predicts the 68-point ibug68 scheme only .*not wflw98"):
        check_scheme(Dlib(), "wflw98")


def test_the_experiment_grid_refuses_dlib_on_another_scheme(tmp_path):
    from facealign.study.experiments import run_grid
    with pytest.raises(ValueError, match=r"dlib comparison is 68-point only \(ibug68\), not scheme=wflw98; pass "
                                         "--no-dlib"):
        run_grid(str(tmp_path), tmp_path / "out", scheme="wflw98")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_data_show_draws_a_98_point_set(tmp_path):
    from facealign.cli import main
    root = make_300w_fixture(tmp_path / "d", {"train": 2}, size=96, scheme="wflw98")
    out = tmp_path / "grid.png"
    assert main(["data", "show", str(root), "--scheme", "wflw98", "-n", "2", "--size", "64", "-o", str(out)]) == 0
    assert Image.open(out).size == (128, 64)


def test_training_flips_relabel_with_the_scheme_pairs(tmp_path):
    """A flip-only augmentation of a 98-point face, on both training paths, is the plain sample mirrored
    (u -> 1 - u) and relabelled with WFLW's pairs."""
    from facealign.detection.boxes import boxes_for
    from facealign.data.cache import CacheSpec, build_crop_cache
    from facealign.data.dataset import CachedFaces
    from facealign.data.tensor_augment import DeviceFaces
    from facealign.data.transforms import AugmentConfig
    root = make_300w_fixture(tmp_path / "d", {"train": 2}, size=96, scheme="wflw98")
    records = index_dataset(root, num_points=98).records("train")
    cache = build_crop_cache(records, boxes_for(records, "gt")[0], CacheSpec(size=32), tmp_path / "c", progress=False)
    perm = get_scheme("wflw98").mirror_permutation
    flip_only = AugmentConfig(rotation_deg=0, scale=0, shift=0, flip_prob=1.0, brightness=0, contrast=0)
    plain = CachedFaces(cache).sample(0)[1]
    for flipped in (CachedFaces(cache, augment=flip_only, mirror=perm).sample(0)[1],
                    DeviceFaces(cache, augment=flip_only, mirror=perm).batch([0])[1][0].numpy()):
        assert flipped.shape == (98, 2)
        np.testing.assert_allclose(flipped[:, 0], 1 - plain[perm, 0], atol=1e-5)
        np.testing.assert_allclose(flipped[:, 1], plain[perm, 1], atol=1e-5)
