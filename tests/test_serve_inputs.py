"""The service's framework-free parts: request parsing, limits, the pool's admission count, CLI checks."""
import io

import numpy as np
import pytest
from PIL import Image

from facealign.cli import main
from facealign.serve.command import is_loopback
from facealign.serve.config import ServeConfig
from facealign.serve.inputs import (RequestError, add_chunk, body_kind, check_content_length, decode_image,
                                    parse_boxes, parse_flag, parse_min_score)
from facealign.serve.pool import AlignerPool


def status(fn, *args) -> int:
    with pytest.raises(RequestError) as e:
        fn(*args)
    return e.value.status


def test_boxes():
    np.testing.assert_array_equal(parse_boxes("[[1, 2, 3.5, 4]]", 8), [[1, 2, 3.5, 4]])
    np.testing.assert_array_equal(parse_boxes("[1, 2, 3, 4]", 8), [[1, 2, 3, 4]])  # one box, no outer list
    assert parse_boxes(None, 8) is None and parse_boxes("  ", 8) is None
    assert parse_boxes("[]", 8).shape == (0, 4)
    for bad in ("[[1, 2, 3]]", "[[1, 2, 3, true]]", "[[\"1\", 2, 3, 4]]", "{\"x\": 1}", "[[5, 0, 1, 9]]",
                "[[0, 0, 1e999, 1]]", "nope"):
        assert status(parse_boxes, bad, 8) == 422, bad
    assert status(parse_boxes, "[[0, 0, 1, 1], [0, 0, 1, 1]]", 1) == 422


def test_options_and_content_types():
    assert parse_min_score(None) is None and parse_min_score("0.5") == 0.5 and parse_min_score("-1") == -1.0
    assert status(parse_min_score, "nan") == 422 and status(parse_min_score, "x") == 422
    assert parse_flag("draw", "TRUE") and parse_flag("draw", "1") and not parse_flag("draw", None)
    assert not parse_flag("draw", "false") and status(parse_flag, "draw", "2") == 422
    assert body_kind("image/png") == "raw" and body_kind("application/octet-stream") == "raw"
    assert body_kind("multipart/form-data; boundary=abc") == "multipart"
    assert status(body_kind, "application/json") == 415 and status(body_kind, None) == 415


def test_body_limits():
    check_content_length(None, 10)
    check_content_length("10", 10)
    assert status(check_content_length, "11", 10) == 413 and status(check_content_length, "ten", 10) == 400
    buf = bytearray()
    add_chunk(buf, b"x" * 10, 10)
    with pytest.raises(RequestError) as e:
        add_chunk(buf, b"y", 10)
    assert e.value.status == 413 and e.value.headers == {"Connection": "close"}


def test_decode_image_limits_pixels_before_decoding():
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 20, 30)).save(buf, format="PNG")
    rgb = decode_image(buf.getvalue(), 60_000)
    assert rgb.shape == (200, 300, 3) and tuple(rgb[0, 0]) == (10, 20, 30)
    assert status(decode_image, buf.getvalue(), 59_999) == 413
    assert status(decode_image, b"", 10) == 400


def test_pool_admission_counts_slots():
    class Stub:
        pass
    pool = AlignerPool(Stub, workers=2, queue=1)
    assert pool.capacity == 3
    assert [pool.try_admit() for _ in range(4)] == [True, True, True, False]
    pool.release()
    assert pool.try_admit() and pool.stats()["refused_503"] == 1
    with pytest.raises(ValueError):
        AlignerPool(Stub, workers=0)
    pool.close()


def test_config_checks_and_loopback():
    ServeConfig().check()
    for bad in (dict(port=70000), dict(workers=-1), dict(queue=-1), dict(max_upload_mb=0), dict(timeout_s=-1)):
        with pytest.raises(ValueError):
            ServeConfig(**bad).check()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")


def test_cli_bad_settings_are_one_line_errors(capsys):
    assert main(["serve", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facealign: error: port must be 0..65535") and err.count("\n") == 1
    assert main(["serve", "--workers", "-1"]) == 2
    assert ServeConfig(workers=3).worker_count == 3 and 1 <= ServeConfig().worker_count <= 4
