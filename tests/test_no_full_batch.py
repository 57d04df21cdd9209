"""A training set smaller than one batch is a one-line error, not an epoch that trains nothing and says so
nowhere (seen on a 9-face generic folder with the `cpu` preset's batch of 16)."""
import warnings

from facealign.cli import main
from facealign.data.synthetic import make_300w_fixture


def test_fewer_faces_than_one_batch_is_a_clear_error(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = make_300w_fixture(tmp_path / "300W", {"afw": 3, "helen/trainset": 3}, size=64)
    args = ["train", "--data", str(root), "--preset", "cpu", "--input-size", "32", "--epochs", "1", "--out",
            str(tmp_path / "runs"), "--set", 'train_box="gt"', "--set", 'val_box="gt"', "--set",
            f'cache_dir="{tmp_path / "cache"}"']
    assert main(args + ["--batch-size", "16"]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "make no full batch of 16" in err and "--batch-size 4 or less" in err  # 6 faces, 80%: 4 train
    assert "Traceback" not in err
    assert main(args + ["--batch-size", "4", "--set", "max_steps=1"]) == 0  # the suggested size trains
