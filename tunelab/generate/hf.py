"""Local transformers generation: batched, left-padded, KV cache, greedy or sampling.

Prompts are sorted by length so each batch pads little; results come back in order.
"""

from __future__ import annotations

import copy
import hashlib
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from tunelab.generate.base import GenerationConfig, Prompt, cut_at_stop, render_prompt


def fingerprint(model: nn.Module, tok) -> str:
    """A hash of the weights (every trainable/adapter tensor and a sample of the rest) and template."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        t = p.detach().float().flatten()
        sample = t if ("lora" in name or t.numel() < 4096) else t[:: max(1, t.numel() // 4096)]
        h.update(name.encode())
        h.update(sample.cpu().numpy().tobytes())
    h.update((tok.chat_template or "").encode())
    return h.hexdigest()[:16]


class HFGenerator:
    """Batched generation with a local (possibly peft-wrapped) transformers model."""

    def __init__(self, model: nn.Module, tok, batch_size: int = 16, precision: str = "fp32",
                 progress: bool = True) -> None:
        self.tok, self.batch_size, self.progress = tok, batch_size, progress
        self.precision = precision
        self.device = next(model.parameters()).device
        self._fingerprint: str | None = None
        self._source = model  # the caller's weights identify the generator (not the bf16 copy)
        # bf16: decode with a bf16 copy of the weights. Autocast would re-cast every frozen
        # weight at every decoding step (it caches casts only for weights that require grad).
        if precision == "bf16" and next(model.parameters()).dtype != torch.bfloat16:
            model = copy.deepcopy(model).to(torch.bfloat16)
        self.model = model.eval()

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self._source, self.tok)
        return self._fingerprint

    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tok, prompt)

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        texts = [self.render(p) for p in prompts]
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[list[str]] = [[] for _ in prompts]
        bs = max(1, self.batch_size // max(1, cfg.n))
        steps = range(0, len(order), bs)
        for start in tqdm(steps, desc="generate", disable=not self.progress or len(steps) < 2, leave=False):
            chunk = order[start : start + bs]
            for i, texts_i in zip(chunk, self._batch([ids[i] for i in chunk], cfg)):
                out[i] = texts_i
        return out

    def _batch(self, batch_ids: list[list[int]], cfg: GenerationConfig) -> list[list[str]]:
        width = max(map(len, batch_ids))
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch_ids], device=self.device)
        sample = cfg.temperature > 0
        if sample:
            torch.manual_seed(cfg.seed)
        kwargs = dict(do_sample=sample, max_new_tokens=cfg.max_new_tokens, num_return_sequences=cfg.n,
                      pad_token_id=pad, eos_token_id=self._eos_ids(), use_cache=True)
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if cfg.stop:
            kwargs.update(stop_strings=cfg.stop, tokenizer=self.tok)
        gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        texts = self.tok.batch_decode(gen[:, width:], skip_special_tokens=True)
        texts = [cut_at_stop(t, cfg.stop) for t in texts]
        return [texts[i * cfg.n : (i + 1) * cfg.n] for i in range(len(batch_ids))]

    def _eos_ids(self) -> list[int]:
        ids = {self.tok.eos_token_id}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
            tid = self.tok.convert_tokens_to_ids(t)
            if isinstance(tid, int) and tid != self.tok.unk_token_id and tid >= 0:
                ids.add(tid)
        return sorted(i for i in ids if i is not None and not (isinstance(i, float) and math.isnan(i)))
