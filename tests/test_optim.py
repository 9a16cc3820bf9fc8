"""core.optim: the schedules give today's rates bit for bit, and OptimStep is the AMP step both
training loops had copies of; train-student writes best/ atomically and cleans up after a kill."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from core.optim import OptimStep, needs_loss_scaling, warmup_cosine_lr, warmup_linear_lr

CPU = torch.device("cpu")


# -- the schedules -------------------------------------------------------------------------------
# Rates recorded before core.optim existed: evaluation/finetune.py's LambdaLR (per group, at each
# optimizer step) and student/train.py's get_lr. Settings: (steps, warmup fraction, lr, encoder_lr).
LAMBDA_RECORDED = {
    (10, 0.1, 1e-3, 2e-5): [
        [2e-05, 0.001], [2e-05, 0.001], [1.7777777777777777e-05, 0.0008888888888888888],
        [1.555555555555556e-05, 0.0007777777777777778], [1.3333333333333333e-05, 0.0006666666666666666],
        [1.1111111111111113e-05, 0.0005555555555555556], [8.888888888888888e-06, 0.0004444444444444444],
        [6.666666666666667e-06, 0.0003333333333333333], [4.444444444444444e-06, 0.0002222222222222222],
        [2.222222222222222e-06, 0.0001111111111111111], [0.0, 0.0], [0.0, 0.0]],
    (13, 0.5, 7e-3, 1e-4): [
        [1.6666666666666667e-05, 0.0011666666666666665], [3.3333333333333335e-05, 0.002333333333333333],
        [5e-05, 0.0035], [6.666666666666667e-05, 0.004666666666666666],
        [8.333333333333334e-05, 0.005833333333333334], [0.0001, 0.007], [0.0001, 0.007],
        [8.571428571428571e-05, 0.006], [7.142857142857143e-05, 0.005], [5.714285714285714e-05, 0.004],
        [4.2857142857142856e-05, 0.003], [2.857142857142857e-05, 0.002], [1.4285714285714285e-05, 0.001],
        [0.0, 0.0], [0.0, 0.0]],
}
# train-student's tiny test run (36 steps, lr 5e-3, min_lr lr / 10, warm-up 36 // 50 -> 1)
GET_LR_RECORDED = {0: 0.005, 1: 0.005000000000000001, 2: 0.004990942161489289,
                   17: 0.003052024848089725, 35: 0.0005090578385107121, 36: 0.0005, 37: 0.0005}


def _finetune_warmup(fraction: float, steps: int) -> int:
    return max(1, int(fraction * steps))  # as evaluation/finetune.py rounds it


@pytest.mark.parametrize("setting", list(LAMBDA_RECORDED))
def test_linear_schedule_gives_the_recorded_lambdalr_rates(setting):
    steps, fraction, lr, encoder_lr = setting
    warmup = _finetune_warmup(fraction, steps)
    got = [[warmup_linear_lr(step, steps, peak, warmup) for peak in (encoder_lr, lr)]
           for step in range(steps + 2)]
    assert got == LAMBDA_RECORDED[setting]  # ==, not approx: the same floats


def _lambdalr_rates(steps: int, warmup: int, peaks: list[float]) -> list[list[float]]:
    """What the LambdaLR that fine-tuning used gave each group at each optimizer step."""

    def schedule(step: int) -> float:  # finetune.py's lambda, as it was
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    optimizer = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": p} for p in peaks])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rates = []
    for _ in range(steps + 2):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("steps, fraction", [(1, 0.1), (5, 0.0), (37, 0.3), (100, 0.06), (250, 0.1)])
def test_linear_schedule_equals_lambdalr(steps, fraction):
    warmup, peaks = _finetune_warmup(fraction, steps), [2e-5, 3e-4, 1e-2]
    got = [[warmup_linear_lr(step, steps, peak, warmup) for peak in peaks] for step in range(steps + 2)]
    assert got == _lambdalr_rates(steps, warmup, peaks)


def test_cosine_schedule_gives_the_recorded_get_lr_rates():
    got = {step: warmup_cosine_lr(step, 36, 5e-3, 5e-4, 1) for step in GET_LR_RECORDED}
    assert got == GET_LR_RECORDED


@pytest.mark.parametrize("total, lr, min_lr, warmup", [(100, 1.0, 0.1, 10), (1000, 3e-3, 0.0, 20),
                                                       (12, 1e-3, 1e-4, 1)])
def test_cosine_schedule_shape(total, lr, min_lr, warmup):
    # today's exact values are pinned by the recorded test above; here its shape on other settings
    rates = [warmup_cosine_lr(s, total, lr, min_lr, warmup) for s in range(total + 3)]
    assert rates[:warmup] == [lr * (s + 1) / warmup for s in range(warmup)]  # linear warm-up
    assert rates[warmup - 1] == lr  # the peak ends the warm-up
    decay = rates[warmup - 1 : total]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))  # then never rises
    assert rates[total:] == [min_lr] * 3  # and stays at min_lr


# -- the step ------------------------------------------------------------------------------------
def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _groups(model: nn.Module, encoder_lr: float, head_lr: float) -> list[dict]:
    """Two groups at different peaks, as the teacher's encoder and head."""
    return [{"params": list(model[0].parameters()), "lr": encoder_lr},
            {"params": list(model[2].parameters()), "lr": head_lr}]


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    x, y = torch.randn(5, 6, generator=generator), torch.randn(5, 3, generator=generator)
    return nn.functional.mse_loss(model(x), y * 10)  # large targets: the clip is active


def test_optim_step_equals_the_hand_written_step_it_replaced():
    steps, warmup, clip = 9, 2, 0.5

    def schedule(step: int) -> float:
        return (step + 1) / warmup if step < warmup else max(0.0, (steps - step) / (steps - warmup))

    # fine-tuning's loop as it was: LambdaLR and the copied AMP step
    before = _model()
    optimizer = torch.optim.AdamW(_groups(before, 1e-2, 3e-2), weight_decay=0.01, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    for step in range(steps):
        loss = _loss(before, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(before.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

    after = _model()
    optim_step = OptimStep(torch.optim.AdamW(_groups(after, 1e-2, 3e-2), weight_decay=0.01, fused=True),
                           lambda step, peak: warmup_linear_lr(step, steps, peak, warmup),
                           CPU, after.parameters(), clip)
    for step in range(steps):
        optim_step(_loss(after, step), step)

    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(_model().state_dict()["0.weight"], after.state_dict()["0.weight"])


def test_each_group_gets_the_schedule_of_its_own_peak():
    model = _model()
    optim_step = OptimStep(torch.optim.SGD(_groups(model, 2e-5, 1e-3)),
                           lambda step, peak: warmup_linear_lr(step, 10, peak, 2), CPU,
                           model.parameters(), 1.0)
    assert optim_step.peaks == [2e-5, 1e-3]
    for step in range(4):
        optim_step(_loss(model, step), step)
        assert [g["lr"] for g in optim_step.optimizer.param_groups] == optim_step.rates(step) \
            == [warmup_linear_lr(step, 10, 2e-5, 2), warmup_linear_lr(step, 10, 1e-3, 2)]


def test_peaks_survive_loading_an_optimizer_state():
    """A resumed run loads the optimizer state (whose rates are the last used, not the peaks)."""
    model = _model()
    schedule = lambda step, peak: warmup_cosine_lr(step, 20, peak, peak / 10, 2)  # noqa: E731
    first = OptimStep(torch.optim.AdamW(_groups(model, 1e-3, 1e-2)), schedule, CPU, model.parameters(), 1.0)
    for step in range(5):
        first(_loss(model, step), step)
    saved = first.optimizer.state_dict()
    assert saved["param_groups"][1]["lr"] == schedule(4, 1e-2) != 1e-2

    resumed = OptimStep(torch.optim.AdamW(_groups(model, 1e-3, 1e-2)), schedule, CPU, model.parameters(), 1.0)
    resumed.optimizer.load_state_dict(saved)
    resumed(_loss(model, 5), 5)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [schedule(5, 1e-3), schedule(5, 1e-2)]


@pytest.mark.parametrize("grad_clip", [0.0, 0.25])
def test_gradient_clipping_only_when_asked(grad_clip):
    """Plain SGD at rate 1 moves the weights by minus the (clipped) gradient."""
    model = nn.Linear(4, 1, bias=False)
    nn.init.ones_(model.weight)
    start = model.weight.detach().clone()
    optim_step = OptimStep(torch.optim.SGD(model.parameters(), lr=1.0), lambda step, peak: peak, CPU,
                           model.parameters(), grad_clip)
    optim_step(model(torch.full((1, 4), 3.0)).sum(), 0)  # gradient: 3 in each of 4 -> norm 6
    moved = (start - model.weight.detach()).norm().item()
    assert moved == pytest.approx(grad_clip if grad_clip else 6.0, rel=1e-5)


def test_loss_scaling_only_for_fp16_autocast(monkeypatch):
    assert not needs_loss_scaling(CPU)
    assert not OptimStep(torch.optim.SGD(_model().parameters(), lr=1.0), lambda s, p: p, CPU,
                         [], 1.0).scaler.is_enabled()
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert not needs_loss_scaling(cuda)  # bf16 autocast
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert needs_loss_scaling(cuda)  # fp16 autocast


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scaled_fp16_step_on_cuda_equals_the_hand_written_one(monkeypatch):
    """The scaled path (scale, backward, unscale, clip, step, update) with a live GradScaler."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    cuda, steps = torch.device("cuda"), 6

    def run(step_fn) -> nn.Module:
        model = _model().to(cuda)
        optimizer = torch.optim.AdamW(_groups(model, 1e-2, 3e-2))
        for step in range(steps):
            with torch.autocast("cuda", dtype=torch.float16):
                x = torch.randn(5, 6, generator=torch.Generator().manual_seed(step)).to(cuda)
                loss = model(x).float().pow(2).mean() * 1e3
            step_fn(model, optimizer, loss, step)
        return model

    rate = lambda step, peak: warmup_linear_lr(step, steps, peak, 2)  # noqa: E731
    scaler = torch.amp.GradScaler("cuda")

    def by_hand(model, optimizer, loss, step):
        for group, peak in zip(optimizer.param_groups, [1e-2, 3e-2], strict=True):
            group["lr"] = rate(step, peak)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()

    helpers = {}

    def by_helper(model, optimizer, loss, step):
        if "step" not in helpers:
            helpers["step"] = OptimStep(optimizer, rate, cuda, model.parameters(), 1.0)
        helpers["step"](loss, step)

    expected, got = run(by_hand), run(by_helper)
    assert helpers["step"].scaler.is_enabled()
    assert helpers["step"].scaler.get_scale() == scaler.get_scale()
    for a, b in zip(expected.state_dict().values(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# -- train-student's atomic writes ------------------------------------------------------------------
def _tiny_config(shards, out, **overrides):
    from student import TrainConfig

    options = dict(shards=[str(shards)], out=str(out), hidden=16, batch_size=16, heldout=0.1,
                   max_steps=4, eval_every=2, log_every=2, checkpoint_every=2, progress=False)
    return TrainConfig(**(options | overrides))


def test_a_failed_best_save_keeps_the_previous_best(tmp_path, tiny_shards, monkeypatch):
    from student.sentence import SentenceStudent
    from student.train import BEST_DIR, Trainer, prepare_output

    config = _tiny_config(tiny_shards, tmp_path / "s")
    prepare_output(config)
    trainer = Trainer(config)
    trainer.save_best()
    best = tmp_path / "s" / BEST_DIR
    before = {p.name: p.read_bytes() for p in best.iterdir()}
    assert "model.safetensors" in before

    def half_then_fail(self, directory, half=False):
        (directory / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(SentenceStudent, "save_module", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_best()
    assert {p.name: p.read_bytes() for p in best.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [BEST_DIR]  # no temporary left


def test_resume_removes_what_a_killed_run_was_writing(tmp_path, tiny_shards):
    from student.train import CHECKPOINT_NAME, run_train_student

    out = tmp_path / "s"
    first = run_train_student(_tiny_config(tiny_shards, out, stop_after=2))
    assert not first.finished and (out / CHECKPOINT_NAME).is_file()
    # the temporaries of a kill -9 during a checkpoint save and during a best/ save
    (out / f".{CHECKPOINT_NAME}.tmp-1-abc").write_bytes(b"half a checkpoint")
    shutil.copytree(out / "best", out / ".best.tmp-1-def")
    second = run_train_student(_tiny_config(tiny_shards, out, resume=True))
    assert second.finished and second.steps == 4
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
