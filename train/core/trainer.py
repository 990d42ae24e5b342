"""One training loop for every stage: AdamW, warm-up + cosine decay, gradient clipping, resumable checkpoints,
model selection on a validation score, a progress bar with ETA and a JSONL log; single process or under
`torchrun --nproc_per_node=N` with DistributedDataParallel (gloo on CPU, nccl on GPU).

Determinism is by construction, so that a resumed run and a multi-process run reproduce a single uninterrupted
one: the global batch of step s is a pure function of (seed, s), each rank takes its slice of it, and every
random choice about a sample (which caption, which SpecAugment stripes) is drawn from (seed, s, sample index).
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from eacap.metrics import caption_metrics
from train.core.config import Schedule


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set); a no-op otherwise."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def device_for(d: Dist) -> torch.device:
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", d.rank)) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def batch_indices(n_items: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The global batch of `step`: consecutive slices of a per-epoch permutation (epoch = step // steps per epoch)."""
    per_epoch = max(1, n_items // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    return order[position * batch_size: (position + 1) * batch_size] if n_items >= batch_size else order


def rank_slice(indices: np.ndarray, d: Dist) -> np.ndarray:
    return indices[d.rank:: d.world]


def sample_rng(seed: int, step: int, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, int(index), purpose])


def validation_score(captions: dict[str, str], references: dict[str, list[str]]) -> float:
    """The score runs are selected on: CIDEr-D of greedy captions of validation clips (no METEOR or SBERT, which
    need Java or a sentence model and would slow every validation)."""
    return float(caption_metrics(captions, references, meteor=False, sbert=False)["cider_d"])


def lr_at(step: int, s: Schedule) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    return s.lr * (s.final_lr_ratio + (1 - s.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class GracefulStop:
    """SIGTERM / SIGINT (kill, Ctrl-C) finish the current step, save a resumable checkpoint, then stop, instead of
    losing the steps since the last periodic checkpoint. Single-process runs only: under DDP every rank would have
    to stop at the same step, so there the default behaviour stays (resume from the last periodic checkpoint)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True):
        self.requested: str | None = None
        self.previous = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: stop now
            self.restore()
            signal.raise_signal(signum)
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


class Trainer:
    """Runs `objective(batch) -> (loss, logs)` for `schedule.steps` steps over `make_batch(step, dist)`.

    `objective` is an nn.Module (wrapped in DDP when distributed); `model` is what gets checkpointed (a sub-module
    of the objective, or the same). `validate()` returns a score, higher is better; the best model is kept.
    """

    def __init__(self, run_dir: Path, model: nn.Module, objective: nn.Module, schedule: Schedule,
                 make_batch: Callable[[int, Dist], dict], validate: Callable[[], float] | None = None,
                 seed: int = 0, d: Dist = Dist(), bf16: bool = False, stop_after: int | None = None):
        self.run_dir, self.model, self.schedule, self.seed, self.d = Path(run_dir), model, schedule, seed, d
        self.make_batch, self.validate, self.bf16, self.stop_after = make_batch, validate, bf16, stop_after
        self.params = [p for p in objective.parameters() if p.requires_grad]
        self.objective = objective
        if d.world > 1:
            self.objective = nn.parallel.DistributedDataParallel(objective)
        self.optimizer = torch.optim.AdamW(self.params, lr=schedule.lr, weight_decay=schedule.weight_decay)
        self.step, self.best = 0, -math.inf
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # -- checkpoints: safetensors for tensors, JSON for the rest (nothing is pickled) --------------------------

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.safetensors"

    def save_state(self) -> None:
        if not self.d.main:
            return
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        index = {id(p): i for i, p in enumerate(self.params)}
        for p, st in self.optimizer.state.items():
            for key, value in st.items():
                tensors[f"optim.{index[id(p)]}.{key}"] = value.detach().cpu().contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        tmp = self.state_path.with_suffix(".tmp")
        save_file(tensors, tmp)
        meta = {"step": self.step, "best": self.best if math.isfinite(self.best) else None}
        os.replace(tmp, self.state_path)
        (self.run_dir / "state.json").write_text(json.dumps(meta))

    def load_state(self) -> bool:
        if not self.state_path.is_file() or not (self.run_dir / "state.json").is_file():
            return False
        tensors = load_file(self.state_path)
        meta = json.loads((self.run_dir / "state.json").read_text())
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for i, p in enumerate(self.params):
            # moments take their parameter's layout again (channels-last convolutions are saved contiguous)
            st = {key.split(".", 2)[2]: (torch.empty_like(p).copy_(v) if v.shape == p.shape else v)
                  for key, v in tensors.items() if key.startswith(f"optim.{i}.")}
            if st:
                self.optimizer.state[p] = st
        torch.set_rng_state(tensors["rng.torch"])
        self.step, self.best = meta["step"], meta["best"] if meta["best"] is not None else -math.inf
        return True

    def save_best(self) -> None:
        if self.d.main:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(tensors, self.run_dir / "best.tmp")
            os.replace(self.run_dir / "best.tmp", self.run_dir / "best.safetensors")

    # -- the loop -------------------------------------------------------------------------------------------

    def log(self, record: dict) -> None:
        if self.d.main:
            with open(self.run_dir / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def fit(self) -> dict:
        resumed = self.load_state()
        s = self.schedule
        if self.step >= s.steps:
            return {"step": self.step, "best": self.best, "resumed": resumed}
        if self.d.main:  # which schedule each stretch of steps ran under: a run resumed with a new budget says so
            with open(self.run_dir / "runs.jsonl", "a") as handle:
                handle.write(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "from_step": self.step,
                                         "schedule": asdict(s), "world": self.d.world}) + "\n")
        bar = tqdm(total=s.steps, initial=self.step, disable=not self.d.main, desc=self.run_dir.name,
                   dynamic_ncols=True, mininterval=2.0)
        last_save, start_step, started = time.time(), self.step, time.time()
        self.objective.train()
        stop = GracefulStop(enabled=self.d.world == 1)
        try:
            while self.step < s.steps:
                lr = lr_at(self.step, s)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                tic = time.time()
                batch = self.make_batch(self.step, self.d)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                    loss, logs = self.objective(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(nn.utils.clip_grad_norm_(self.params, s.clip_norm))
                self.optimizer.step()
                self.step += 1
                seconds = time.time() - tic
                record = {"step": self.step, "lr": lr, "loss": float(loss.detach()), "grad_norm": grad_norm,
                          "seconds": seconds,
                          **{k: float(v) for k, v in logs.items()}}
                bar.set_postfix(loss=f"{record['loss']:.3f}", s_per_step=f"{seconds:.2f}")
                bar.update(1)
                if self.validate is not None and (self.step % s.eval_every == 0 or self.step == s.steps):
                    self.objective.eval()
                    score = self.validate()
                    self.objective.train()
                    record["val"] = score
                    if score > self.best:
                        self.best = score
                        self.save_best()
                self.log(record)
                done = (self.step == s.steps or (self.stop_after is not None and self.step >= self.stop_after)
                        or stop.requested)
                if done or time.time() - last_save > s.checkpoint_seconds:
                    self.save_state()
                    last_save = time.time()
                if done:
                    break
        finally:
            stop.restore()
        bar.close()
        if stop.requested:  # the stage must not go on (evaluate, export) with a half-trained model: exit
            print(f"{self.run_dir.name}: stopped by {stop.requested} at step {self.step} with a checkpoint; "
                  "run the same command to resume", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.Signals[stop.requested].value)
        if self.validate is None:
            self.save_best()  # nothing to select on: the last weights are the result
        elapsed = time.time() - started
        steps_run = self.step - start_step
        result = {"step": self.step, "best": self.best, "resumed": resumed, "seconds": elapsed,
                  "seconds_per_step": elapsed / max(1, steps_run)}
        if self.d.main:
            print(f"{self.run_dir.name}: {result['step']} steps, best val {result['best']:.3f}, "
                  f"{result['seconds_per_step']:.2f} s/step over {steps_run} steps (validation included): "
                  f"{s.steps} steps take {result['seconds_per_step'] * s.steps / 3600:.2f} h at this rate")
        return result
