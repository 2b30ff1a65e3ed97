"""Training and fine-tuning: losses, the schedule, sharding, exact resume, distillation, CLI."""

import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tcompress.cli import main
from tcompress.data import SyntheticPose, write_image
from tcompress.errors import CheckpointError, DataError, TcompressError
from tcompress.models import StackedHourglass
from tcompress.serialize import load
from tcompress.train import (
    TrainSettings,
    distillation_loss,
    fit,
    heatmap_loss,
    read_state,
)
from tcompress.train.distributed import ShardSampler
from tcompress.train.loop import learning_rate_factor, make_optimizer

TINY = dict(n_stacks=2, depth=2, block_depth=1, features=8, n_joints=16)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return StackedHourglass(**TINY)


class Cached(torch.utils.data.Dataset):
    """A few synthetic samples at 64 x 64, generated once (fast steps for the tests)."""

    def __init__(self, n=8, split="train", labels=True):
        source = SyntheticPose(n, 64, 16, seed=3, split=split)
        self.items = [source[i] for i in range(n)]
        if not labels:
            self.items = [{"image": s["image"], "index": s["index"]} for s in self.items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def data():
    return Cached()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_heatmap_loss_sums_the_mse_of_every_stack():
    target = torch.zeros(1, 2, 4, 4)
    a, b = torch.full_like(target, 1.0), torch.full_like(target, 2.0)
    assert heatmap_loss([a, b], target).item() == pytest.approx(1.0 + 4.0)
    assert heatmap_loss(a, target).item() == pytest.approx(1.0)


def test_distillation_pairs_stacks_or_uses_the_teachers_last():
    s = [torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)]
    assert distillation_loss(s, [torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)]).item() == 0
    # one teacher stack: both student stacks are compared with it
    assert distillation_loss(s, [torch.ones(1, 1, 2, 2)]).item() == pytest.approx(1.0)


def test_default_schedule_is_multi_step_at_60_and_85_percent():
    assert TrainSettings(steps=1000).milestone_steps == (600, 850)
    assert TrainSettings(steps=10, milestones=(3,)).milestone_steps == (3,)


def test_cosine_and_linear_schedules_fall_to_zero_at_the_last_step():
    for schedule, middle in (("cosine", 0.5), ("linear", 0.5)):
        factor = learning_rate_factor(TrainSettings(steps=100, schedule=schedule, optimizer="adam"))
        assert factor(0) == 1.0
        assert factor(50) == pytest.approx(middle)
        assert factor(99) == pytest.approx(
            0.5 * (1 + math.cos(math.pi * 0.99)) if schedule == "cosine" else 0.01
        )
    cosine = learning_rate_factor(TrainSettings(steps=100, schedule="cosine", optimizer="adam"))
    assert cosine(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_rises_linearly_then_follows_the_schedule():
    plain = learning_rate_factor(TrainSettings(steps=100, schedule="cosine", optimizer="adam"))
    warm = learning_rate_factor(
        TrainSettings(steps=100, schedule="cosine", optimizer="adam", warmup=10)
    )
    assert warm(0) == pytest.approx(0.1 * plain(0))
    assert warm(4) == pytest.approx(0.5 * plain(4))
    assert warm(9) == pytest.approx(plain(9))
    assert [warm(k) for k in range(10, 100)] == [plain(k) for k in range(10, 100)]
    # On top of the milestones (the first at step 60), and of RMSprop's bias correction.
    step = learning_rate_factor(TrainSettings(steps=100, warmup=70, bias_correction=False))
    assert step(65) == pytest.approx(0.1 * 66 / 70)
    corrected = learning_rate_factor(TrainSettings(steps=100, warmup=70))
    assert corrected(65) == pytest.approx(0.1 * 66 / 70 * (1 - 0.99**66) ** 0.5)


def test_history_records_the_rate_each_step_used(data):
    settings = TrainSettings(steps=4, batch_size=4, lr=1e-3, schedule="linear", optimizer="adam")
    result = fit(tiny_model(), data, settings, log_every=1)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_rmsprop_bias_correction_factor_and_first_step():
    settings = TrainSettings(steps=100, lr=1e-3)
    factor = learning_rate_factor(settings)
    assert factor(0) == pytest.approx(0.1)  # sqrt(1 - 0.99)
    assert factor(59) == pytest.approx((1 - 0.99**60) ** 0.5)
    assert factor(60) == pytest.approx(0.1 * (1 - 0.99**61) ** 0.5)  # the first milestone
    assert learning_rate_factor(TrainSettings(steps=100, bias_correction=False))(60) == 0.1
    assert learning_rate_factor(TrainSettings(steps=100, optimizer="adam"))(0) == 1.0

    # The first update moves every coordinate by about the learning rate, not ten times it.
    for correct, expected in ((True, 1e-3), (False, 1e-2)):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        s = TrainSettings(steps=10, lr=1e-3, bias_correction=correct)
        optimizer = make_optimizer([w], s)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(s))
        (w * torch.tensor([0.5, 3.0, -7.0])).sum().backward()
        optimizer.step()
        scheduler.step()
        moved = (w.detach() - torch.tensor([1.0, -2.0, 3.0])).abs()
        torch.testing.assert_close(moved, torch.full((3,), expected), rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be a positive integer, got 0"),
        (dict(steps=5, optimizer="lbfgs"), "optimizer 'lbfgs' is not one of"),
        (dict(steps=5, lr=-1.0), "learning rate must be positive, got -1.0"),
        (dict(steps=5, schedule="poly"), "schedule 'poly' is not one of"),
        (dict(steps=5, precision="fp16"), "precision 'fp16' is not one of ('fp32', 'bf16')"),
        (dict(steps=5, distill_weight=1.5), "distillation weight must be in [0, 1], got 1.5"),
        (dict(steps=5, warmup=5), "warm-up must be 0 to 4 steps (fewer than steps), got 5"),
        (dict(steps=5, warmup=-1), "warm-up must be 0 to 4 steps (fewer than steps), got -1"),
    ],
)
def test_settings_are_checked(kwargs, message):
    with pytest.raises(TcompressError, match=re.escape(message)):
        TrainSettings(**kwargs)


def test_shards_are_disjoint_equal_and_cover_whole_batches():
    shards = [list(ShardSampler(23, 3, rank=r, world=2, seed=1, epoch=4)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 9  # 11 per rank, 3 whole batches
    assert not set(shards[0]) & set(shards[1])
    again = list(ShardSampler(23, 3, rank=0, world=2, seed=1, epoch=4))
    assert again == shards[0]
    assert list(ShardSampler(23, 3, rank=0, world=2, seed=1, epoch=5)) != shards[0]
    assert list(ShardSampler(23, 3, rank=0, world=2, seed=1, epoch=4, skip=3)) == shards[0][3:]


def test_a_few_steps_lower_the_loss(data):
    model = tiny_model()
    settings = TrainSettings(steps=30, batch_size=8, optimizer="adam", lr=3e-3, milestones=())
    result = fit(model, data, settings, log_every=1)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, data, schedule):
    settings = TrainSettings(steps=6, batch_size=3, lr=1e-3, schedule=schedule)  # 2 batches/epoch
    reference = tiny_model()
    fit(reference, data, settings)

    checkpoint, kept = tmp_path / "run.state", tmp_path / "step3.state"

    def keep(event):
        if event["kind"] == "save" and event["step"] == 3:
            shutil.copy(checkpoint, kept)

    interrupted = tiny_model()
    fit(interrupted, data, settings, checkpoint=checkpoint, save_every=3, on_event=keep)
    assert read_state(kept)["step"] == 3

    resumed = tiny_model(seed=99)  # its own weights are replaced by the state's
    result = fit(resumed, data, settings, resume=kept)
    assert result.steps == 6
    want, got = state(reference), state(resumed)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_resume_with_other_settings_is_refused(tmp_path, data):
    path = tmp_path / "run.state"
    fit(tiny_model(), data, TrainSettings(steps=2, batch_size=4), checkpoint=path)
    with pytest.raises(CheckpointError, match=r"other settings \(lr 0.00025 -> 0.001\)"):
        fit(tiny_model(), data, TrainSettings(steps=2, batch_size=4, lr=1e-3), resume=path)
    with pytest.raises(CheckpointError, match=r"other settings \(schedule 'step' -> 'cosine'\)"):
        cosine = TrainSettings(steps=2, batch_size=4, schedule="cosine")
        fit(tiny_model(), data, cosine, resume=path)

    with pytest.raises(CheckpointError, match=r"other settings \(precision 'fp32' -> 'bf16'\)"):
        bf16 = TrainSettings(steps=2, batch_size=4, precision="bf16")
        fit(tiny_model(), data, bf16, resume=path)

    # A state written before the schedule and the precision were settings resumes under the
    # multi-step schedule in float32.
    payload = torch.load(path, weights_only=False)
    del payload["settings"]["schedule"], payload["settings"]["precision"]
    torch.save(payload, path)
    assert fit(tiny_model(), data, TrainSettings(steps=2, batch_size=4), resume=path).steps == 2


def test_bf16_mixed_precision_trains_in_float32_parameters(data):
    model = tiny_model()
    settings = TrainSettings(
        steps=30, batch_size=8, optimizer="adam", lr=3e-3, milestones=(), precision="bf16"
    )
    result = fit(model, data, settings, log_every=1)
    losses = [h["loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # The model is handed back in the default memory layout, whatever fit trained it in.
    assert all(p.is_contiguous() for p in model.parameters())


def test_bf16_fine_tunes_a_tnet_built_in_float32(data):
    from tcompress import convert

    torch.manual_seed(0)
    tnet = convert(tiny_model(), ranks=(1, 2, 3, 1, 4, 4, 3, 3))
    images = torch.stack([data[i]["image"] for i in range(2)])
    kernels = []
    tnet.tensor_convs()[0].register_forward_pre_hook(
        lambda conv, args: kernels.append(conv._weights[1].dtype)
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tnet(images)
    # W is rebuilt at the factors' precision even under autocast; the convolutions run in bf16.
    assert kernels == [torch.float32]
    assert out[-1].dtype == torch.bfloat16
    sum(o.float().sum() for o in out).backward()
    assert all(p.grad.dtype == torch.float32 for p in tnet.parameters() if p.grad is not None)

    settings = TrainSettings(steps=3, batch_size=4, lr=1e-4, precision="bf16")
    before = state(tnet)
    result = fit(tnet, data, settings)
    assert math.isfinite(result.final_loss)
    assert any(not torch.equal(before[k], v) for k, v in state(tnet).items())


def test_a_model_file_is_not_a_training_state(tmp_path):
    path = tmp_path / "hg.pth"
    torch.save(tiny_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="is not a training state to resume from"):
        read_state(path)


def test_unlabeled_data_needs_a_teacher():
    images = Cached(4, labels=False)
    with pytest.raises(DataError, match="the data has no heatmap labels"):
        fit(tiny_model(), images, TrainSettings(steps=1, batch_size=2))
    with pytest.raises(TcompressError, match="needs a teacher network"):
        fit(tiny_model(), images, TrainSettings(steps=1, batch_size=2, distill_weight=1.0))


def test_too_few_samples_for_one_batch(data):
    with pytest.raises(DataError, match="8 samples do not fill one batch of 16 on each of 1"):
        fit(tiny_model(), data, TrainSettings(steps=1, batch_size=16))


def test_distillation_alone_moves_the_student_towards_the_teacher():
    teacher, student = tiny_model(0), tiny_model(1)
    images = Cached(8, labels=False)
    batch = torch.stack([images[i]["image"] for i in range(8)])

    def gap():
        with torch.no_grad():
            teacher.eval(), student.eval()
            return distillation_loss(student(batch), teacher(batch)).item()

    before = gap()
    settings = TrainSettings(steps=25, batch_size=4, optimizer="adam", lr=3e-3, distill_weight=1)
    fit(student, images, settings, teacher=teacher)
    assert gap() < 0.5 * before
    assert all(not p.requires_grad for p in teacher.parameters())


def test_evaluation_as_it_goes(data):
    val = Cached(4, split="val")
    result = fit(
        tiny_model(), data, TrainSettings(steps=4, batch_size=4), val_data=val, eval_every=2
    )
    assert [e["step"] for e in result.evaluations] == [2, 4]
    assert all(0 <= e["pckh"] <= 100 for e in result.evaluations)


# ---------------------------------------------------------------- command line


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


COMMON = ["--image-size", "64", "--batch-size", "4", "--eval-samples", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    args = [
        "train",
        "--data",
        "synthetic",
        "--stacks",
        "1",
        "--depth",
        "2",
        "--block-depth",
        "1",
        "--features",
        "8",
        "--steps",
        "4",
        *COMMON,
        "-o",
        d / "hg.pth",
        "--json",
    ]
    r = run(args)
    assert r.exit_code == 0, r.output
    return d, json.loads(r.output)


def test_cli_train_writes_a_dense_checkpoint(trained):
    d, summary = trained
    assert summary["steps"] == 4 and summary["images"] == 16
    assert summary["settings"]["optimizer"] == "rmsprop"
    assert len(summary["evaluations"]) == 1
    model = load(d / "hg.pth")
    assert isinstance(model, StackedHourglass) and model.config.features == 8


def test_cli_finetune_a_tnet_with_recalibration_and_resume(trained, tmp_path, interrupt_at):
    d, _ = trained
    tnet = tmp_path / "t.pt"
    assert run(["convert", d / "hg.pth", "--ranks", "1,2,3,1,4,4,3,3", "-o", tnet]).exit_code == 0
    args = ["finetune", tnet, "--data", "synthetic", "--steps", "4", *COMMON]
    r = run([*args, "--recalibrate", "8", "-o", tmp_path / "a.pt", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["recalibrated_images"] == 8
    assert load(tmp_path / "a.pt").method == "tucker"

    # a run interrupted at step 3 (Ctrl-C) and resumed ends where an uninterrupted one does
    r = run([*args, "-o", tmp_path / "whole.pt"])
    assert r.exit_code == 0, r.output
    interrupt_at(3)
    r = run([*args, "-o", tmp_path / "cut.pt", "--save-every", "2"])
    assert r.exit_code == 130
    assert "Interrupted; nothing written but" in r.output and "continue with --resume" in r.output
    assert not (tmp_path / "cut.pt").exists()
    assert read_state(tmp_path / "cut.pt.state")["step"] == 2
    interrupt_at(None)
    r = run([*args, "-o", tmp_path / "cut.pt", "--resume", tmp_path / "cut.pt.state"])
    assert r.exit_code == 0, r.output
    whole, resumed = (
        load(tmp_path / "whole.pt").state_dict(),
        load(tmp_path / "cut.pt").state_dict(),
    )
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_cli_finetune_from_cached_samples_in_bf16(trained, tmp_path, monkeypatch):
    d, _ = trained
    tnet = tmp_path / "t.pt"
    assert run(["convert", d / "hg.pth", "--ranks", "1,2,3,1,4,4,3,3", "-o", tnet]).exit_code == 0
    args = ["finetune", tnet, "--data", "synthetic", "--steps", "6", *COMMON]
    cached = [*args, "--train-samples", "8", "--cache", "--precision", "bf16", "--recalibrate", "8"]
    r = run([*cached, "-o", tmp_path / "a.pt", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)  # the JSON alone: a CPU without bf16 warns on stderr
    assert summary["cached_samples"] == 8 and summary["recalibrated_images"] == 8
    assert summary["settings"]["precision"] == "bf16"
    assert summary["images"] == 24  # 3 epochs of the 8 cached samples
    assert math.isfinite(summary["final_loss"])
    # generated once, the same samples every time: the run repeats exactly; and where bf16
    # would be emulated, the command says so
    import tcompress.train

    monkeypatch.setattr(tcompress.train, "native_bf16", lambda device: False)
    r = run([*cached, "-o", tmp_path / "b.pt"])
    assert r.exit_code == 0, r.output
    assert "warning: cpu has no native bfloat16 arithmetic here; --precision bf16 is likely" in (
        r.output
    )
    a, b = load(tmp_path / "a.pt").state_dict(), load(tmp_path / "b.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_distills_from_unlabeled_images(trained, tmp_path):
    d, _ = trained
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        write_image(folder / f"{i}.png", (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    tnet = tmp_path / "t.pt"
    run(["convert", d / "hg.pth", "--ranks", "1,2,3,1,4,4,3,3", "-o", tnet])
    base = ["finetune", tnet, "--data", folder, "--steps", "2", *COMMON]
    r = run([*base, "-o", tmp_path / "no-teacher.pt"])
    assert r.exit_code == 2
    assert "Error: the data has no heatmap labels" in r.output
    assert not (tmp_path / "no-teacher.pt").exists()
    r = run([*base, "--distill-from", d / "hg.pth", "-o", tmp_path / "ft.pt", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["settings"]["distill_weight"] == 1.0
    assert summary["evaluations"] == []  # no labels: nothing to evaluate
    assert os.path.exists(tmp_path / "ft.pt")


def test_cli_finetune_on_an_mpii_style_set(trained, tmp_path):
    from .test_data import _person

    d, _ = trained
    rng = np.random.default_rng(1)
    names = ["im0.png", "im1.png", "im19.png", "im3.png", "im4.png"]  # im19: held out (val)
    for name in names:
        write_image(tmp_path / name, (rng.random((100, 120, 3)) * 255).astype(np.uint8))
    joints = {0: (85, 50), 5: (40, 60), 8: (60, 30), 9: (60, 20), 15: (5, 50)}
    entries = [_person(name, joints, validation=int(k >= 3)) for k, name in enumerate(names)]
    (tmp_path / "annotations.json").write_text(json.dumps(entries))
    r = run(
        [
            "finetune",
            d / "hg.pth",
            "--data",
            tmp_path,
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--image-size",
            "64",
            "-o",
            tmp_path / "ft.pth",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["images"] == 4 and len(summary["evaluations"]) == 1  # on the held-out image
    assert isinstance(load(tmp_path / "ft.pth"), StackedHourglass)


def test_cli_unavailable_device_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run(
        [
            "train",
            "--data",
            "synthetic",
            "--steps",
            "1",
            "--device",
            "cuda",
            "-o",
            tmp_path / "hg.pth",
        ]
    )
    assert r.exit_code == 2
    assert "Error: device 'cuda': CUDA is not available here; use --device cpu" in r.output
    assert not (tmp_path / "hg.pth").exists()
