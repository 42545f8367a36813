"""The `fastgen` command line: info, argument and data errors, BN folding for export, and
(once fastgen.train has landed) train -> sample -> export end to end on a tiny model."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT
from helpers.cli_helpers import TINY, run_cli

from fastgen._info import format_info, info
from fastgen.cli import main


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- info -----------------------------------------------------------------------------------


def test_format_info_aligns_long_op_names():
    data = info()
    data["ops"] = {"short": ["cpu"], "a_very_long_operator_name_past_the_old_width": []}
    lines = [line for line in format_info(data).splitlines() if line.startswith("  ")]
    starts = {line.index("cpu") if "cpu" in line else line.index("none") for line in lines}
    assert len(starts) == 1, lines
    keys = [line for line in format_info(data).splitlines() if not line.startswith(" ")]
    assert keys[0].startswith("fastgen                ")  # key column stays 22 wide


def test_info_command(capsys):
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "native backends:" in out


# --- argument errors: one line, exit 2 ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        ([], ["fastgen: error:", "COMMAND"]),
        (["frobnicate"], ["invalid choice"]),
        (["train"], ["fastgen train: error:", "model"]),
        (["train", "gan"], ["invalid choice: 'gan'"]),
        (["train", "dcgan", "--steps", "many"], ["--steps", "invalid int value"]),
        (["train", "dcgan", "--amp", "fp8"], ["--amp", "invalid choice"]),
        (["train", "dcgan", "--lr", "0.1"], ["--lr does not apply to `fastgen train dcgan`"]),
        (["train", "vae", "--loss", "hinge"], ["--loss does not apply to `fastgen train vae`"]),
        (["sample", "x.pt"], ["--out"]),
        (["export", "x.pt", "--out", "g.pt", "--format", "onnx"], ["--format", "invalid choice"]),
        (["sample", "x.pt", "--out", "g.png", "--n", "0"], ["--n must be >= 1"]),
        (["sample", "x.pt", "--out", "g.png", "--interpolate", "1"], ["at least 2 steps"]),
    ],
)
def test_argument_errors_are_one_line(argv, needles, capsys):
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, *needles)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["dcgan", "--batch-size", "0"], "--batch-size must be an int >= 1, got 0"),
        (["dcgan", "--resolution", "48"], "--resolution must be a power of two from 16 to 256, got 48"),
        (["dcgan", "--width", "0"], "--width must be an int >= 1, got 0"),
        (["dcgan", "--lr-g", "0"], "--lr-g must be > 0, got 0.0"),
        (["dcgan", "--beta1", "1.5"], "--beta1 must be in [0, 1), got 1.5"),
        (["dcgan", "--diffaugment", "blur"], "--diffaugment must be a comma list of"),
        (["vae", "--kl-warmup", "-1"], "--kl-warmup must be an int >= 0, got -1"),
        (["dcgan", "--eval-every", "2", "--eval-metrics", "bogus"],
         "--eval-metrics expected names from fid,kid,is,pr,coverage,c2st,nll, got bogus"),
        (["dcgan", "--eval-every", "2", "--eval-n", "1"], "--eval-n must be an int >= 2, got 1"),
        (["dcgan", "--eval-every", "2", "--eval-metrics", "is", "--eval-n", "10"],
         "--eval-n must be at least 20 samples for the Inception Score"),
    ],
)  # fmt: skip
def test_train_errors_name_the_command_and_the_flag_typed(argv, expected, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", *argv, "--quiet", "--out", str(out)], capsys)
    assert_one_line_error(code, err, f"fastgen train: error: {expected}")
    for internal in ("GANConfig", "VAEConfig", "fastgen.", "fastgen eval", "_"):
        assert internal not in err.replace(str(tmp_path), ""), err
    assert not out.exists(), "a refused command wrote its run folder"


def test_library_errors_name_arguments_and_commands_name_their_flags(tmp_path, capsys):
    from fastgen.config import GANConfig
    from fastgen.metrics.evaluator import split_metrics

    with pytest.raises(ValueError, match=r"^fastgen.metrics.split_metrics: metrics expected names"):
        split_metrics("bogus")  # the library names its own argument, not a flag
    with pytest.raises(ValueError, match=r"^GANConfig: batch_size must be an int >= 1, got 0$"):
        GANConfig(batch_size=0).validate()
    missing = tmp_path / "none.pt"
    code, _, err = run_cli(["sample", str(missing), "--device", "gpu0", "--out", "x.png"], capsys)
    assert_one_line_error(code, err, "fastgen sample: error: --device must be auto, cpu or")


def test_train_warns_on_one_line_when_the_precision_has_no_hardware(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fastgen.train.precision.cpu_has_bf16", lambda: False)
    argv = ["train", "vae", "--out", str(tmp_path / "v"), *TINY, "--steps", "1", "--amp", "bf16"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "fastgen train: warning: mixed precision bf16"
    ), err
    assert "68 images/s in bf16 against 1,202 in float32" in lines[0] and "--amp none" in lines[0]


def test_bench_train_is_delegated(capsys):
    code, out, _ = run_cli(["bench", "train", "--help"], capsys)
    assert code == 0 and "--models" in out
    code, _, err = run_cli(["bench", "train", "--models", "gpt"], capsys)
    assert_one_line_error(code, err, "fastgen bench train: error:", "gpt")
    code, _, err = run_cli(["bench"], capsys)
    assert_one_line_error(code, err, "WHAT")


def test_python_dash_m_error_has_no_traceback():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTGEN_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "fastgen", "train", "vae", "--lr-g", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr.strip() == "fastgen train: error: --lr-g does not apply to `fastgen train vae`"
    )


# --- data and checkpoint errors (need fastgen.train for the config) ---------------------------


def test_bad_data_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(
        ["train", "dcgan", "--data", str(missing), "--out", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, "no such file or folder", str(missing), "expected 'digits'")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["train", "dcgan", "--data", str(tmp_path / "empty")], capsys)
    assert_one_line_error(code, err, "no images (PNG, JPEG, WebP, BMP")


def test_corrupt_and_missing_checkpoints(tmp_path, capsys):
    bad = tmp_path / "ckpt_000010.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    for argv in (
        ["sample", str(bad), "--out", str(tmp_path / "s.png")],
        ["export", str(bad), "--out", str(tmp_path / "g.pt")],
    ):
        code, _, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, str(bad))
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "g.pt").exists()
    code, _, err = run_cli(["sample", str(tmp_path / "missing.pt"), "--out", "x.png"], capsys)
    assert_one_line_error(code, err, "missing.pt")
    code, _, err = run_cli(["train", "dcgan", "--resume", str(tmp_path / "missing.pt")], capsys)
    assert_one_line_error(code, err, "--resume", "missing.pt")


def test_fastgen_debug_reraises(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGEN_DEBUG", "1")
    with pytest.raises(ValueError, match="no such file or folder"):
        main(["train", "dcgan", "--data", str(tmp_path / "nowhere"), "--quiet"])


# --- export's BN folding (needs only fastgen.models) ---------------------------------------------


def test_fold_batch_norm_matches_eval_mode():
    from fastgen.export import fold_batch_norm
    from fastgen.models import DCGANGenerator

    torch.manual_seed(0)
    net = DCGANGenerator(resolution=16, channels=3, latent_dim=8, width=4, fused=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    folded = fold_batch_norm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    z = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(z), net(z), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("groups", [1, 2])
def test_the_one_batch_norm_fold_matches_conv_then_batch_norm(groups):
    from fastgen.utils.folding import fold_batch_norm_into_conv_transpose

    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=groups).double()
    bn = torch.nn.BatchNorm2d(6).double().eval()
    with torch.no_grad():
        for tensor in (bn.running_mean, bn.weight, bn.bias):
            tensor.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
    weight, bias = fold_batch_norm_into_conv_transpose(
        conv.weight, conv.bias, running_mean=bn.running_mean, running_var=bn.running_var,
        eps=bn.eps, bn_weight=bn.weight, bn_bias=bn.bias, groups=groups,
    )  # fmt: skip
    assert weight.dtype == bias.dtype == torch.float64
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    folded = torch.nn.functional.conv_transpose2d(x, weight, bias, 2, 1, groups=groups)
    torch.testing.assert_close(folded, bn(conv(x)))
    weight.sum().backward()  # differentiable: ConvTransposeBNAct2d's eval gradients need it
    assert conv.weight.grad is not None and bn.weight.grad is not None


def test_slerp_endpoints_and_norms():
    from fastgen.sample import slerp

    a, b = torch.randn(3, 16), torch.randn(3, 16)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (3, 5, 16)
    torch.testing.assert_close(path[:, 0], a)
    torch.testing.assert_close(path[:, -1], b)


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_dcgan(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcgan")
    assert main(["train", "dcgan", "--data", "digits", "--out", str(out), *TINY]) == 0
    from fastgen.train.checkpoint import latest_checkpoint

    return out, latest_checkpoint(out)


def test_train_writes_the_run_folder(trained_dcgan):
    from fastgen.utils.images import read_png_metadata

    out, ckpt = trained_dcgan
    assert ckpt is not None and ckpt.is_file()
    assert (out / "config.json").is_file() and (out / "log.jsonl").is_file()
    samples = sorted((out / "samples").glob("*.png"))
    assert samples
    assert read_png_metadata(samples[-1])["fastgen:generated"].startswith("true")


def test_truncated_checkpoint_is_one_line(trained_dcgan, tmp_path, capsys):
    _, ckpt = trained_dcgan
    cut = tmp_path / "ckpt_000004.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    code, _, err = run_cli(["sample", str(cut), "--out", str(tmp_path / "s.png")], capsys)
    assert_one_line_error(code, err, str(cut), "not a readable checkpoint")
    code, _, err = run_cli(
        ["train", "dcgan", "--resume", str(cut), *TINY, "--out", str(tmp_path)], capsys
    )
    assert_one_line_error(code, err, str(cut))


def test_eval_every_builds_the_metrics_evaluator_and_logs_it(tmp_path, monkeypatch):
    import fastgen.metrics.cli
    import fastgen.train.cli

    calls = []

    def factory(args, config, dataset):
        # the real factory accepts the CLI's arguments (building it is cheap; calling it
        # would compute digits features, which `fastgen eval` below covers)
        assert callable(fastgen.train.cli.make_evaluator.__wrapped__(args, config, dataset))
        calls.append(args.eval_metrics)
        return lambda step, models: {"fake_metric": float(step)}

    factory.__wrapped__ = fastgen.train.cli.make_evaluator
    monkeypatch.setattr(fastgen.train.cli, "make_evaluator", factory)
    assert fastgen.metrics.cli.make_evaluator is not None
    out = tmp_path / "run"
    argv = ["train", "dcgan", "--out", str(out), *TINY, "--steps", "2", "--eval-every", "2"]
    assert main([*argv, "--eval-metrics", "fid"]) == 0
    assert calls == ["fid"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any(row.get("eval", {}).get("fake_metric") == 2.0 for row in rows), rows


def test_eval_command(trained_dcgan, tmp_path, capsys):
    _, ckpt = trained_dcgan
    report = tmp_path / "eval.json"
    argv = [
        "eval",
        str(ckpt),
        "--metrics",
        "fid",
        "--n",
        "32",
        "--device",
        "cpu",
        "--out",
        str(report),
    ]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "fid" in stdout and "fid" in json.loads(report.read_text())["metrics"]
    code, _, err = run_cli(["eval", str(ckpt), "--metrics", "nope"], capsys)
    assert_one_line_error(code, err, "nope")


def test_sample_grid_and_interpolation(trained_dcgan, tmp_path, capsys):
    from fastgen.train.checkpoint import checkpoint_hash
    from fastgen.utils.images import read_png_metadata

    _, ckpt = trained_dcgan
    grid = tmp_path / "grid.png"
    assert main(["sample", str(ckpt), "--n", "9", "--out", str(grid), "--seed", "3"]) == 0
    meta = read_png_metadata(grid)
    assert meta["model"] == checkpoint_hash(ckpt) and meta["seed"] == "3" and meta["step"] == "4"
    strip = tmp_path / "strip.png"
    assert main(["sample", str(ckpt), "--n", "2", "--interpolate", "5", "--out", str(strip)]) == 0
    from PIL import Image

    with Image.open(strip) as png:
        assert png.size == (2 + 5 * 18, 2 + 2 * 18)
    code, _, err = run_cli(
        ["sample", str(ckpt), "--out", str(tmp_path / "c.png"), "--class", "3"], capsys
    )
    assert_one_line_error(code, err, "unconditional")


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("torchscript", "float32"), ("state_dict", "float32"), ("pt2", "bfloat16")]
)
def test_export_matches_the_ema_generator(trained_dcgan, tmp_path, fmt, dtype):
    from fastgen.export import load_exported
    from fastgen.sample import generate, load_sampler

    _, ckpt = trained_dcgan
    path = tmp_path / ("g.pt2" if fmt == "pt2" else "g.pt")
    assert main(["export", str(ckpt), "--out", str(path), "--format", fmt, "--dtype", dtype]) == 0
    exported = load_exported(path)
    kind, model, _ = load_sampler(ckpt)
    expected = generate(kind, model, 6, seed=5)
    z = torch.randn(6, model.latent_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        images = exported(z)
    tol = 1e-4 if dtype == "float32" else 5e-2
    torch.testing.assert_close(images, expected, atol=tol, rtol=0)


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "state_dict"])
def test_exports_are_frozen_and_take_the_tutorials_latent_shape(trained_dcgan, tmp_path, fmt):
    from fastgen.export import load_exported

    _, ckpt = trained_dcgan
    path = tmp_path / ("g.pt2" if fmt == "pt2" else "g.pt")
    assert main(["export", str(ckpt), "--out", str(path), "--format", fmt]) == 0
    loaded = load_exported(path)
    files = {"loaded": loaded}
    if fmt == "torchscript":
        files["torch.jit.load"] = torch.jit.load(str(path))
    elif fmt == "pt2":
        files["torch.export.load"] = torch.export.load(path).module()
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    expected = loaded(z).numpy()  # no torch.no_grad(): a frozen module needs none
    for name, module in files.items():
        assert not any(p.requires_grad for p in module.parameters()), name
        if fmt != "pt2":  # a pt2 program was captured in eval mode and refuses .eval()
            assert not module.training, name
        for shape in ((3, 8), (3, 8, 1, 1)):  # [N, latent_dim] and the tutorial's noise
            out = module(z.reshape(shape))
            assert not out.requires_grad, (name, shape)
            torch.testing.assert_close(out.numpy(), expected, atol=0, rtol=0)
    if fmt == "state_dict":  # the eager module checks the shape in one line
        with pytest.raises(ValueError, match=r"^fastgen.export: z must have shape \[N, 8\] or "
                           r"\[N, 8, 1, 1\], got \[3, 8, 2, 2\]$"):  # fmt: skip
            loaded(torch.randn(3, 8, 2, 2))


def test_vae_end_to_end(tmp_path):
    out = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--out", str(out), *TINY]) == 0
    from fastgen.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(out)
    assert main(["sample", str(ckpt), "--n", "4", "--out", str(tmp_path / "v.png")]) == 0
    assert main(["export", str(ckpt), "--out", str(tmp_path / "v.pt")]) == 0


# --- run folders, damaged and malformed checkpoints, full disks (issue 13) ------------------


def assert_one_line(code, err, expected_code, *needles):
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_fresh_run_into_a_used_folder_is_one_line_and_resume_latest_continues(tmp_path, capsys):
    out = str(tmp_path / "D")
    base = ["train", "dcgan", "--data", "digits", *TINY, "--out", out]
    code, _, err = run_cli([*base, "--steps", "9", "--checkpoint-every", "3"], capsys)
    assert code == 0, err
    # Before: this run pruned its own ckpt_000002.pt and ended in a FileNotFoundError.
    code, _, err = run_cli([*base, "--steps", "2", "--checkpoint-every", "1"], capsys)
    assert_one_line(code, err, 2, out, "already holds a run", "--resume latest", "--overwrite")
    code, stdout, err = run_cli([*base, "--steps", "10", "--resume", "latest"], capsys)
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["steps_run"] == 1  # from ckpt_000009.pt


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "ENOSPC-in-torch", "RuntimeError"])
def test_full_disk_or_read_only_while_checkpointing_is_one_line(
    tmp_path, capsys, monkeypatch, code
):
    import errno
    import tempfile

    from fastgen.train.checkpoint import load_checkpoint

    number = getattr(errno, code.split("-")[0], None)
    cause = os.strerror(number) if number else "unexpected pos 704 vs 598"
    out = tmp_path / "run"
    real_save = torch.save
    if code == "ENOSPC":  # the disk fills while the second checkpoint is written

        def save(obj, handle, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("step") == 4:
                handle.write(b"partial")
                raise OSError(number, os.strerror(number))
            return real_save(obj, handle, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    elif code == "ENOSPC-in-torch":  # torch's writer meets it and reports a RuntimeError

        class FullDisk:  # a file whose writes fail once a block is in (issue 24.10)
            def __init__(self, handle):
                self.handle, self.written = handle, 0

            def write(self, data):
                self.written += len(data)
                if self.written > 4096:
                    raise OSError(number, os.strerror(number))
                return self.handle.write(data)

        def save(obj, handle, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("step") == 4:
                handle = FullDisk(handle)
            return real_save(obj, handle, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    elif code == "RuntimeError":  # the same without the OSError it came from

        def save(obj, handle, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("step") == 4:
                handle.write(b"partial")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . " + cause)
            return real_save(obj, handle, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    else:  # the file system turns read-only: the second checkpoint cannot even be created
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, **kwargs):
            if kwargs.get("prefix", "").startswith(".ckpt_000004"):
                raise OSError(number, os.strerror(number), str(kwargs.get("dir")))
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    code_, _, err = run_cli(
        ["train", "dcgan", "--data", "digits", *TINY, "--sample-every", "0", "--out", str(out)],
        capsys,
    )
    assert_one_line(code_, err, 1, "ckpt_000004.pt", cause, "ckpt_000002.pt")
    checkpoints = out / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["ckpt_000002.pt"]  # no temporary file left
    assert load_checkpoint(checkpoints / "ckpt_000002.pt")["step"] == 2  # nothing lost


def test_damaged_and_malformed_checkpoints_are_one_line(trained_dcgan, tmp_path, capsys):
    from fastgen.train.checkpoint import load_checkpoint, save_checkpoint

    _, ckpt = trained_dcgan
    state = load_checkpoint(ckpt)
    plain = {k: v for k, v in state.items() if k not in ("format", "version", "sha256")}
    step_abc = tmp_path / "step_abc.pt"
    save_checkpoint(step_abc, {**plain, "step": "abc"})
    no_ema = tmp_path / "no_ema.pt"
    save_checkpoint(no_ema, {**plain, "models": {**plain["models"], "ema": [1, 2]}})
    resume = ["train", "dcgan", "--data", "digits", *TINY, "--out", str(tmp_path / "o")]
    code, _, err = run_cli([*resume, "--resume", str(step_abc)], capsys)
    assert_one_line_error(code, err, str(step_abc), "step")
    code, _, err = run_cli(["sample", str(no_ema), "--out", str(tmp_path / "s.png")], capsys)
    assert_one_line_error(code, err, str(no_ema), "ema")
    code, _, err = run_cli(["export", str(no_ema), "--out", str(tmp_path / "g.pt")], capsys)
    assert_one_line_error(code, err, str(no_ema), "ema")


def test_unsafe_pickle_is_one_line_without_torchs_advice(tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "fastgen-checkpoint", "payload": Exploit()}, evil)
    code, _, err = run_cli(["sample", str(evil), "--out", str(tmp_path / "s.png")], capsys)
    assert_one_line_error(code, err, str(evil))
    assert "weights_only" not in err and "False" not in err, err


# --- the [train] extra (issue 14, item 8) ---------------------------------------------------


def test_missing_train_extras_fail_at_start_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = tmp_path / "run"
    argv = ["train", "dcgan", "--steps", "1", "--resolution", "16", "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "tqdm, matplotlib are not installed", 'pip install ".[train]"')
    assert not out.exists()  # refused before anything ran
    code, _, err = run_cli([*argv, "--quiet"], capsys)  # no progress bar: tqdm is not needed
    assert_one_line_error(code, err, "matplotlib is not installed", "pip install matplotlib")


def test_missing_extras_are_named_where_they_are_needed(tmp_path, monkeypatch):
    from fastgen.data import load_dataset
    from fastgen.train import GANConfig, train_gan
    from fastgen.utils.extras import MissingExtraError
    from fastgen.utils.images import save_image_grid

    digits = load_dataset("digits", resolution=16)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingExtraError, match=r"save_image_grid: pillow is not installed"):
        save_image_grid(torch.zeros(1, 1, 4, 4), tmp_path / "g.png")
    with pytest.raises(MissingExtraError, match=r"load_dataset: pillow is not installed"):
        load_dataset(str(tmp_path))
    config = GANConfig(steps=1, resolution=16, out_dir=str(tmp_path / "run"), device="cpu")
    with pytest.raises(MissingExtraError, match=r"train_gan: pillow is not installed"):
        train_gan(config, digits, progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_takes_the_checkpoints_config_and_refuses_other_training_settings(tmp_path, capsys):
    """Before: `--resume latest` without the original flags continued a hinge/lr 1e-3 run as
    BCE with the CLI defaults while the optimiser kept 1e-3."""
    out = tmp_path / "R"
    base = ["train", "dcgan", "--out", str(out), "--device", "cpu", "--quiet"]
    first = [*base, "--data", "digits", *TINY, "--loss", "hinge", "--lr-g", "0.001"]
    code, _, err = run_cli(first, capsys)
    assert code == 0, err
    code, _, err = run_cli([*base, "--resume", "latest", "--loss", "bce", "--steps", "6"], capsys)
    assert_one_line(code, err, 2, "--loss 'bce'", "the checkpoint's: 'hinge'")
    # A run that reached its --steps is complete: rerunning its command with --resume latest
    # (what a preempted job does) says so and exits 0 (issue 24.9; before: exit 2), writing
    # nothing; only a smaller --steps than the checkpoint's is an error.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, stdout, err = run_cli([*base, "--resume", "latest"], capsys)
    assert code == 0 and err == "", err
    assert "complete" in stdout and "ckpt_000004.pt" in stdout and "--steps 4" in stdout, stdout
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    code, _, err = run_cli([*base, "--resume", "latest", "--steps", "3"], capsys)
    assert_one_line(code, err, 2, "at step 4, past --steps 3", "larger --steps")
    code, stdout, err = run_cli([*base, "--resume", "latest", "--steps", "6"], capsys)
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["steps_run"] == 2
    config = json.loads((out / "config.json").read_text())
    assert (config["loss"], config["lr_g"], config["steps"], config["width"]) == (
        "hinge", 0.001, 6, 4,
    )  # fmt: skip


def test_sample_export_and_eval_take_a_run_folder_and_bad_devices_are_one_line(tmp_path, capsys):
    out = tmp_path / "F"
    code, _, err = run_cli(["train", "dcgan", "--data", "digits", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(
        ["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png")], capsys
    )
    assert code == 0 and (tmp_path / "s.png").is_file(), err
    code, _, err = run_cli(["sample", str(tmp_path), "--out", str(tmp_path / "t.png")], capsys)
    assert_one_line(code, err, 2, "is a folder with no checkpoint")
    if not torch.cuda.is_available():
        code, _, err = run_cli(
            ["sample", str(out), "--device", "cuda", "--out", str(tmp_path / "u.png")], capsys
        )
        assert_one_line(code, err, 2, "fastgen sample: error: --device 'cuda' requested but")
    code, _, err = run_cli(["sample", str(out), "--device", "gpu0", "--out", "x.png"], capsys)
    assert_one_line(code, err, 2, "device must be auto, cpu or cuda[:N], got 'gpu0'")


def test_an_error_naming_its_command_is_not_prefixed_twice(tmp_path, capsys):
    missing = tmp_path / "none.pt"
    missing.write_bytes(b"")
    code, _, err = run_cli(["eval", str(missing), "--n", "1"], capsys)
    assert_one_line(code, err, 2, "fastgen eval: error: --n must be an int >= 2, got 1")
    assert err.count("fastgen eval") == 1


def test_help_does_not_import_torch_and_shows_every_default():
    """The train options come from fastgen.config's dataclasses (help, choices, defaults)."""
    import dataclasses
    import subprocess
    import sys

    from fastgen.config import GANConfig, VAEConfig

    for argv in (["--help"], ["train", "--help"], ["--version"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "fastgen", *argv],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
        assert "torch" not in imported, argv
    text = subprocess.run(
        [sys.executable, "-m", "fastgen", "train", "--help"], capture_output=True, text=True
    ).stdout
    for cls in (GANConfig, VAEConfig):
        for field in dataclasses.fields(cls):
            flag = field.metadata.get("flag", field.name.replace("_", "-"))
            assert f"--{flag}" in text, flag
    assert "defaults: dcgan runs/dcgan, vae runs/vae" in " ".join(text.split())
    assert "{bce,hinge,wgan-gp}" in text


def test_overwrite_removes_every_file_of_the_old_run(tmp_path, capsys):
    """Before: the old run's checkpoints/ckpt_*.eval.json and a VAE's samples/recon_*.png
    stayed beside the new run's files (issue 28.6)."""
    out = tmp_path / "V"
    base = ["train", "vae", "--data", "digits", *TINY, "--out", str(out)]
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    for step in (2, 4):  # what `fastgen eval CKPT` writes beside each checkpoint
        (out / "checkpoints" / f"ckpt_{step:06d}.eval.json").write_text("{}")
    code, _, err = run_cli([*base, "--overwrite", "--steps", "2"], capsys)
    assert code == 0, err
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"run.lock"}
    assert files == {
        "run.json", "config.json", "log.jsonl", "losses.png", "checkpoints/ckpt_000002.pt",
        "samples/step_000002.png", "samples/recon_000002.png",
    }  # fmt: skip


def test_overwrite_replaces_only_the_run_files(tmp_path, capsys):
    out = tmp_path / "O"
    base = ["train", "dcgan", "--data", "digits", *TINY, "--out", str(out)]
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli([*base, "--overwrite", "--resume", "latest"], capsys)
    assert_one_line(code, err, 2, "--overwrite and --resume")
    code, stdout, err = run_cli([*base, "--overwrite", "--steps", "2"], capsys)
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["steps_run"] == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_000002.pt"]
