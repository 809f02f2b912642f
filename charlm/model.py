"""The byte-level language model: byte embedding, a stack of blocks, final norm, LM head.

Every part but the embedding and the head is a registry component named by the config, so a
plugin's block stacks like a built-in one (``model.layers`` mixes kinds in one stack).

One code path runs three ways:

- training: ``model(idx)`` with ``states=None``; no state is built;
- prefill: ``model(prompt, pos=0, states=model.init_states(...))`` fills every layer's state;
- decode: ``model(next_bytes, pos=n, states=states)`` continues from those states.

The model hands each block its state and never looks inside it. Each block initialises its
own parameters; the model initialises only the embeddings and the head. The state is a list:
one entry per block, then, with n-gram embeddings, the last bytes of each sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from charlm.ngram import NgramEmbedding
from charlm.registry import get_registry

VOCAB_SIZE = 256  # bytes


def init_residual_projection(weight: torch.Tensor, cfg) -> None:
    """Init a layer that writes into the residual stream (attention / MLP output projection).

    Zero when ``cfg.zero_init_projections`` (every block starts as the identity, as in the
    nanoGPT speedrun records), else GPT-2's N(0, init_std / sqrt(2 n_layer)), so the residual
    stream does not grow with depth. Plugin blocks may use it for the same purpose.
    """
    if cfg.zero_init_projections:
        nn.init.zeros_(weight)
    else:
        nn.init.normal_(weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))


class ByteLM(nn.Module):
    """A language model over bytes, assembled from registry components.

    ``cfg`` is a ``ModelConfig`` whose components carry structured options (as
    ``charlm.config.config_from_dict`` / ``load_config`` produce); ``max_len`` is the context
    the model is trained at.
    """

    def __init__(self, cfg, max_len: int):
        super().__init__()
        registry = get_registry()
        self.cfg = cfg
        self.max_len = max_len
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.d_model)
        self.ngram = NgramEmbedding(cfg.ngram_buckets, cfg.ngram_width, cfg.ngram_split) if cfg.ngram_buckets else None
        # one positional encoding shared by every block: a learned table is stored once
        self.positional = registry.create("positional", cfg.positional, model=cfg, max_len=max_len)
        self.blocks = nn.ModuleList(
            registry.create("block", spec, model=cfg, layer_index=i, positional=self.positional, max_len=max_len)
            for i, spec in enumerate(cfg.layer_specs())
        )
        self.norm = registry.create("norm", cfg.norm, dim=cfg.d_model)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, VOCAB_SIZE, bias=False)

        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        if self.head is not None:
            # a zero head predicts the uniform distribution (loss ln 256) until it learns
            nn.init.zeros_(self.head.weight)

        contexts = [block.max_context for block in self.blocks if block.max_context is not None]
        self.max_context: int | None = min(contexts) if contexts else None

    def forward(self, idx: torch.Tensor, pos: int = 0, states: list | None = None):
        """Logits [B, T, 256] (float32) for bytes ``idx`` [B, T] whose first sits at position ``pos``.

        Returns ``(logits, None)`` without states and ``(logits, new_states)`` with them.
        """
        x = self.embed(idx)
        if self.ngram is not None:
            before = states[-1] if states is not None else self.ngram.init_state(idx.shape[0], idx.device)
            x = x + self.ngram(idx, before)
        x = self.positional.embed(x, pos)
        new_states = None if states is None else []
        for i, block in enumerate(self.blocks):
            x, state = block(x, pos, None if states is None else states[i])
            if new_states is not None:
                new_states.append(state)
        if new_states is not None and self.ngram is not None:
            new_states.append(self.ngram.next_state(states[-1], idx))
        return self.logits(x), new_states

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, 256] (float32) of the last block's output ``x``."""
        x = self.norm(x)
        logits = self.head(x) if self.head is not None else x @ self.embed.weight.t()
        if self.cfg.logit_softcap > 0:
            # tanh soft-cap (Gemma 2): logits stay in (-cap, cap), so no byte gets overconfident
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        return logits.float()

    def init_states(self, batch: int, max_len: int, device, dtype) -> list:
        """Empty states for ``batch`` sequences of up to ``max_len`` bytes: one per block, then
        (with n-gram embeddings) the bytes before the first, all 0."""
        states = [block.init_state(batch, max_len, device, dtype) for block in self.blocks]
        if self.ngram is not None:
            states.append(self.ngram.init_state(batch, device))
        return states

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameters (a tied head counted once); ``non_embedding`` leaves out the byte, n-gram
        and position tables, which are lookups, not matmuls (a tied head goes with them)."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.embed.weight.numel()
            total -= sum(p.numel() for p in self.ngram.parameters()) if self.ngram is not None else 0
            total -= sum(p.numel() for p in self.positional.parameters())
        return total

    def flops_per_byte(self, seq_len: int) -> float:
        """Training FLOPs per byte (forward + backward) at context ``seq_len``, for MFU.

        6 per matmul parameter (the head's matmul counts even when tied) plus 3x each block's
        forward FLOPs outside its parameters: blocks report those with an optional
        ``flops_per_token(seq_len)`` (attention: 4 d T, the PaLM convention, no causal halving).
        """
        matmul_params = self.num_parameters(non_embedding=True)
        if self.head is None:
            matmul_params += self.embed.weight.numel()
        extra = sum(block.flops_per_token(seq_len) for block in self.blocks if hasattr(block, "flops_per_token"))
        return 6.0 * matmul_params + 3.0 * extra

    def no_weight_decay(self) -> set[str]:
        """Full names of parameters never to decay: norms, biases, embeddings, and what each
        block names (an SSM's decay rates are 2-D yet must not decay)."""
        names = {name for name, p in self.named_parameters() if p.ndim < 2}
        names.add("embed.weight")
        if self.ngram is not None:
            names |= {f"ngram.{name}" for name, _ in self.ngram.named_parameters()}
        names |= {f"positional.{name}" for name, _ in self.positional.named_parameters()}
        for i, block in enumerate(self.blocks):
            names |= {f"blocks.{i}.{name}" for name in block.no_weight_decay()}
        return names
