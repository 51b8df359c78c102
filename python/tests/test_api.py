"""Tests of the installed bnfold wheel: the API and the console script.

Run by `make package-test` in a fresh venv into which the wheel was installed
offline, so they exercise the bundled static binary, not a development build.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bnfold

FIXTURES = Path(__file__).resolve().parents[2] / "Fixtures"
MODEL = FIXTURES / "conv2d_bn.onnx"
# Same input and output as MODEL, other weights: a genuinely different model.
OTHER = FIXTURES / "conv2d_nobias_bn.onnx"
NOT_PROTOBUF = FIXTURES / "bad" / "not_protobuf.onnx"


@pytest.fixture
def fused(tmp_path: Path) -> Path:
    out = tmp_path / "fused.onnx"
    bnfold.fold(MODEL, out)
    return out


def test_uses_the_bundled_binary() -> None:
    assert "BNFOLD_BINARY" not in os.environ
    path = Path(bnfold.binary_path())
    assert path.name == "bnfold" and path.parent.name == "_bin"
    assert "site-packages" in path.parts
    assert os.access(path, os.X_OK)


def test_fold_fixture(tmp_path: Path) -> None:
    out = tmp_path / "fused.onnx"
    result = bnfold.fold(MODEL, out)
    assert isinstance(result, bnfold.FoldResult) and dataclasses.is_dataclass(result)
    assert result.batchnorm == bnfold.BatchNormCounts(found=1, folded=1, kept=0)
    assert (result.nodes_before, result.nodes_after) == (2, 1)
    assert result.verification.whole_model_passed
    assert result.verification.worst_ratio < 1
    assert result.missed == ()
    assert result.remarks[0].kind == "applied" and result.remarks[0].pass_name == "fold-batchnorm"
    assert result.written.model_bytes == out.stat().st_size
    assert result.output == str(out)
    assert result.version == bnfold.__version__
    assert result.report["tool"] == "bnfold"


def test_fold_options(tmp_path: Path) -> None:
    result = bnfold.fold(MODEL, tmp_path / "f.onnx", passes=["fold-batchnorm"], no_verify=True,
                         external_data="inline", max_memory="1G")
    assert result.passes == ("fold-batchnorm",)
    assert result.verification.whole_model.startswith("skipped")
    assert not result.verification.whole_model_passed


def test_fold_kept_batchnorm_is_reported(tmp_path: Path) -> None:
    result = bnfold.fold(FIXTURES / "skip_training_mode.onnx", tmp_path / "f.onnx")
    assert result.batchnorm.kept == 1
    assert [r.reason for r in result.missed] == ["TrainingMode"]


def test_check_equivalent(fused: Path) -> None:
    assert bnfold.check(MODEL, fused).equivalent
    result = bnfold.check(str(MODEL), str(fused), samples=2, seed=7, input_shape={"X": [1, 3, 6, 6]})
    assert result.rule == "derived" and result.samples == 2 and result.seed == 7
    (y,) = result.outputs
    assert y.name == "Y" and y.equivalent and y.ratio is not None and y.ratio < 1
    assert y.shape == (1, 6, 6, 6)


def test_check_notes_and_strict(fused: Path) -> None:
    result = bnfold.check(MODEL, fused)
    assert result.notes == ("the models ran on input 'X' [1, 3, 6, 6] (N = 1: unbound; --input-shape sets it)",)
    with pytest.raises(bnfold.Error) as caught:
        bnfold.check(MODEL, fused, strict=True)
    assert caught.value.exit_code == 1
    assert caught.value.message.startswith("--strict: unbound dimensions (each was 1) in input(s) 'X'")
    assert bnfold.check(MODEL, fused, strict=True, input_shape={"X": [2, 3, 6, 6]}).equivalent


def test_check_tolerance_rule(fused: Path) -> None:
    result = bnfold.check(MODEL, fused, rtol=1e-3, atol=1e-5)
    assert result.equivalent and result.rule == "tolerance"
    assert (result.rtol, result.atol) == (1e-3, 1e-5)
    assert result.outputs[0].bound is None


def test_check_mismatch_is_a_result_not_an_error() -> None:
    result = bnfold.check(MODEL, OTHER)
    assert result.equivalent is False
    assert not result.outputs[0].equivalent
    assert result.outputs[0].ratio is not None and result.outputs[0].ratio > 1


def test_bad_input_raises_error_with_the_one_line_message(tmp_path: Path) -> None:
    out = tmp_path / "f.onnx"
    with pytest.raises(bnfold.Error) as caught:
        bnfold.fold(NOT_PROTOBUF, out)
    error = caught.value
    assert error.exit_code == 2
    assert error.message == str(error)
    assert error.message.startswith(f"{NOT_PROTOBUF}: ")
    assert "protobuf" in error.message
    assert "\n" not in error.message and not error.message.startswith("bnfold: error:")
    assert error.stderr.startswith("bnfold: error: " + error.message)
    assert not out.exists()

    with pytest.raises(bnfold.Error) as caught:
        bnfold.check(NOT_PROTOBUF, MODEL)
    assert caught.value.exit_code == 2


def test_unknown_option_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(bnfold.Error) as caught:
        bnfold.fold(MODEL, tmp_path / "f.onnx", no_such_option=True)
    assert caught.value.exit_code == 2
    with pytest.raises(TypeError):
        bnfold.fold(MODEL, tmp_path / "f.onnx", json=True)


def test_failed_verification_raises_with_exit_code_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in binary that fails as bnfold does when verification fails
    # (exit 1, one error line, nothing written): the shipped binary has no
    # hook to spoil a fold, and the wrapper's mapping is what is tested here.
    fake = tmp_path / "bnfold-failing"
    fake.write_text("#!/bin/sh\necho \"bnfold: error: $2: verification failed: pair bn folded into conv\" >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BNFOLD_BINARY", str(fake))
    out = tmp_path / "f.onnx"
    with pytest.raises(bnfold.Error) as caught:
        bnfold.fold(MODEL, out)
    assert caught.value.exit_code == 1
    assert "verification failed" in caught.value.message
    assert not out.exists()


def console_script() -> Path:
    return Path(sys.executable).parent / "bnfold"


def test_console_script_version() -> None:
    done = subprocess.run(["bnfold", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == bnfold.__version__
    # `bnfold` on PATH is this venv's console script.
    import shutil

    assert Path(shutil.which("bnfold") or "") == console_script()


def test_console_script_passes_argv_and_exit_status(tmp_path: Path) -> None:
    out = tmp_path / "f.onnx"
    done = subprocess.run([console_script(), MODEL, "-o", out], capture_output=True, text=True)
    assert done.returncode == 0 and out.exists()
    assert subprocess.run([console_script(), "check", MODEL, OTHER], capture_output=True).returncode == 1
    done = subprocess.run([console_script(), NOT_PROTOBUF, "-o", out], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("bnfold: error: ")


def test_python_dash_m() -> None:
    done = subprocess.run([sys.executable, "-m", "bnfold", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == bnfold.__version__
