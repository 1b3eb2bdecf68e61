"""The command line as a user meets it: instant help, quiet logs, one-line errors."""

import subprocess
import sys

import pytest

from keras_vit_cli import _common, quiet
from keras_vit_cli import main as cli


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "keras_vit_cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_choices_of_the_options_are_the_librarys():
    from keras_vit.export import FORMATS
    from keras_vit.export.exporter import QUANTIZE_CHOICES
    from keras_vit.export.openvino import PRECISIONS
    from keras_vit.export.saved_model import MAX_IMAGE_PIXELS
    from keras_vit.model.posemb import POSEMB_INTERPOLATIONS
    from keras_vit.model.vit import SEMANTICS
    from keras_vit.train.strategies import STRATEGIES
    from keras_vit.weights.writers import NPZ_LAYOUTS

    assert _common.POSEMB_INTERPOLATIONS == POSEMB_INTERPOLATIONS
    assert _common.SEMANTICS == SEMANTICS
    assert _common.EXPORT_FORMATS == FORMATS
    assert _common.QUANTIZATIONS == QUANTIZE_CHOICES  # float32 is always written
    assert _common.OPENVINO_PRECISIONS == PRECISIONS
    assert _common.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
    assert _common.STRATEGIES == STRATEGIES
    assert _common.NPZ_LAYOUTS == NPZ_LAYOUTS


def test_help_imports_neither_keras_vit_nor_tensorflow():
    code = (
        "import sys\n"
        "from keras_vit_cli import main\n"
        "try:\n    main.main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_vit') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "--image-size SIZE" in out.stdout and "HEIGHTxWIDTH" in out.stdout


def test_an_error_is_one_line_without_tensorflow_logs(tmp_path):
    result = run_cli("convert", str(tmp_path / "missing.npz"), str(tmp_path / "out.keras"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert (
        lines[-1] == f"keras-vit convert: error: Weights file not found: {tmp_path / 'missing.npz'}"
    )
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr
    assert "oneDNN" not in result.stderr and "absl" not in result.stderr
    assert not (tmp_path / "out.keras").exists()


def test_verbose_shows_the_traceback(tmp_path):
    result = run_cli(
        "convert", str(tmp_path / "missing.npz"), str(tmp_path / "o.keras"), "--verbose"
    )
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "FileNotFoundError" in result.stderr


def test_an_unexpected_error_names_itself_and_how_to_see_more(monkeypatch, capsys):
    def broken(args):
        raise TypeError("something internal")

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_run(parser(), broken))
    assert cli.main(["evaluate", "model.keras"]) == quiet.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "unexpected TypeError: something internal" in err and "--verbose" in err
    assert "Traceback" not in err


def _with_run(parser, run):
    for action in parser._subparsers._group_actions:
        for command in action.choices.values():
            command.set_defaults(run=run)
    return parser


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["predict", "m.keras", "x.png", "--top-k", "0"], "expected a positive integer, got '0'"),
        (
            ["export", "--model", "ViT_B16", "--output", "o", "--format", "saved_model,pdf"],
            "expected a comma-separated list of saved_model, tflite, onnx",
        ),
        (
            ["inspect", "--model", "m", "--output", "o", "--image-size", "0", "x.png"],
            "expected SIZE or HEIGHTxWIDTH",
        ),
        (
            ["fewshot", "--model", "m", "--data", "d", "--test-fraction", "1.5"],
            "expected a number between 0 and 1",
        ),
        (["train", "digits_scratch", "--strategy", "gpu"], "invalid choice: 'gpu'"),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
