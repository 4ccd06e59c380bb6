"""What the NER and stance trainers share: seeding, length-bucketed batches, the optimiser loop."""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

LOG = logging.getLogger(__name__)
T = TypeVar("T")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bucketed_batches(items: Sequence[T], length: Callable[[T], int], batch_size: int, rng: random.Random) -> list[list[T]]:
    """Shuffle, sort within chunks of 50 batches by length (little padding), shuffle the batches."""
    order = list(items)
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[T]] = []
    for begin in range(0, len(order), chunk):
        part = sorted(order[begin: begin + chunk], key=length)
        batches.extend(part[i: i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def make_optimizer(param_groups: list[dict], total_steps: int, warmup_fraction: float = 0.1):
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(param_groups, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total_steps * warmup_fraction), total_steps)
    return optimizer, scheduler


def train_epochs(
    modules: Iterable[nn.Module],
    batches_for_epoch: Callable[[int], list],
    loss_of_batch: Callable[[list], torch.Tensor],
    optimizer,
    scheduler,
    epochs: int,
    on_epoch_end: Callable[[int], dict],
) -> list[dict]:
    """The shared loop: progress bar per epoch, time per epoch, a dev evaluation after each."""
    modules = list(modules)
    history = []
    for epoch in range(1, epochs + 1):
        for m in modules:
            m.train()
        batches = batches_for_epoch(epoch)
        started = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", mininterval=5)
        running = 0.0
        for step, batch in enumerate(bar, 1):
            loss = loss_of_batch(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for m in modules for p in m.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{running / step:.4f}")
        seconds = time.perf_counter() - started
        for m in modules:
            m.eval()
        scores = on_epoch_end(epoch)
        record = {"epoch": epoch, "seconds": round(seconds, 1), "train_loss": round(running / max(1, len(batches)), 5), **scores}
        LOG.info("epoch %d done in %.1f s: %s", epoch, seconds, record)
        print(f"epoch {epoch}: {seconds:.1f} s, {record}", flush=True)
        history.append(record)
    return history
