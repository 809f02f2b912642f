"""The sampling steps registered by ``charlm.builtin.samplers`` (their options are there)."""

import torch

from charlm.builtin.samplers import MinPConfig, TemperatureConfig, TopKConfig, TopPConfig


def greedy(cfg=None):
    def step(logits, generator):
        return logits.argmax(dim=-1)

    return step


def temperature(cfg: TemperatureConfig):
    def step(logits, generator):
        return logits / cfg.value

    return step


def top_k(cfg: TopKConfig):
    """Keep the k largest logits (ties at the k-th value are kept too)."""

    def step(logits, generator):
        k = min(cfg.k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    return step


def top_p(cfg: TopPConfig):
    """Keep the smallest set of most likely tokens whose probability mass reaches p."""

    def step(logits, generator):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits.float(), dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        # A token is dropped when the more likely ones already reach p; the top one never is.
        drop_sorted = mass_before >= cfg.p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))

    return step


def min_p(cfg: MinPConfig):
    """Keep the tokens at least p times as likely as the most likely one."""

    def step(logits, generator):
        probs = torch.softmax(logits.float(), dim=-1)
        threshold = cfg.p * probs.max(dim=-1, keepdim=True).values
        return logits.masked_fill(probs < threshold, float("-inf"))

    return step
