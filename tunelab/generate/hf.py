"""Local transformers generation: batched, KV cache, greedy or sampling.

Decoding runs its own loop rather than ``model.generate``: a row leaves the batch (its KV cache
rows are dropped) as soon as it emits an end-of-sequence token or a stop string, so the cost
follows the tokens actually generated, not the longest completion of the batch. With a plain
growing KV cache, :class:`tunelab.generate.engine.DecodeEngine` batches continuously (queued
prompts take the freed rows, prefilled together with their shared beginning computed once, every
row has its own settings; a
server feeds one engine through ``BatchingLoop``). Models whose cache layers are not plain (sliding
windows: Gemma3) batch continuously too when every prompt plus its budget fits the window (the
sliding layers then evict nothing); longer ones decode fixed left-padded batches sorted by length
(``_decode``).
Greedy decoding gives the same tokens as ``generate`` (tested). Prompt-learning peft models
(prefix/prompt tuning, whose virtual tokens live in ``prepare_inputs_for_generation``) keep
``model.generate``.
"""

from __future__ import annotations

import copy
import hashlib
import math

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache, DynamicLayer

from tunelab.generate.base import GenerationConfig, Prompt, cut_at_stop, encode_prompt, n_generated
from tunelab.generate.engine import DecodeEngine
from tunelab.generate.kv_cache import decode_step
from tunelab.models.load import cache_kwarg, keep_last
from tunelab.train.precision import cached_cast


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


def _is_prompt_learning(model: nn.Module) -> bool:
    configs = getattr(model, "peft_config", None) or {}
    return any(getattr(c, "is_prompt_learning", False) for c in configs.values())


def pick_tokens(logits: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator | None) -> torch.Tensor:
    """Next token per row: argmax (temperature 0) or a nucleus sample. ``logits``: (B, V) fp32."""
    if cfg.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > cfg.top_p  # mass before this token already > top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        return order.gather(-1, torch.multinomial(sorted_p, 1, generator=gen)).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


class HFGenerator:
    """Batched generation with a local (possibly peft-wrapped) transformers model."""

    def __init__(
        self, model: nn.Module, tok, batch_size: int = 16, precision: str = "fp32", progress: bool = True
    ) -> None:
        self.tok, self.batch_size, self.progress = tok, batch_size, progress
        self.precision = precision
        self.device = next(model.parameters()).device
        self._fingerprint: str | None = None
        self.source_model = model
        """The caller's weights (the bf16 decode copy is ``model``): they identify the generator and
        serve log-likelihood scoring."""
        # bf16: decode with a bf16 copy of the weights. Autocast would re-cast every frozen
        # weight at every decoding step (it caches casts only for weights that require grad).
        # Frozen weights already stored in bf16 (training's cast_frozen_linears) are shared with the
        # copy, not copied: generation only reads them, and an online objective (GRPO, RLOO) builds a
        # generator every step, which used to copy the whole model each time. A shared weight changed in
        # place while the generator lives (a merge, a cast) changes the decode copy too: build a new one.
        # The same for a frozen fp32 weight whose bf16 cast training's loss already keeps (a tied LM head,
        # :func:`tunelab.train.precision.cast_once`): the copy takes that cast instead of cloning the fp32
        # weight and casting it again (113 + 57 MB per generator for SmolLM2's tied embedding). That tensor is
        # training's own cached cast: the decode copy must never change it in place (no merge into the copy).
        if precision == "bf16" and any(p.dtype != torch.bfloat16 for p in model.parameters()):
            shared: dict[int, nn.Parameter] = {}
            for p in model.parameters():
                if p.requires_grad:
                    continue
                if p.dtype == torch.bfloat16:
                    shared[id(p)] = p
                elif (cast := cached_cast(p, torch.bfloat16)) is not None:
                    shared[id(p)] = nn.Parameter(cast, requires_grad=False)
            model = copy.deepcopy(model, shared).to(torch.bfloat16)
        self.model = model.eval()
        self._own_loop = not _is_prompt_learning(model)
        self._plain: bool | None = None
        self.generated_tokens = 0
        """Tokens generated so far (end-of-sequence tokens included), for throughput figures."""
        self._cache_kw = cache_kwarg(model)

    @property
    def fingerprint(self) -> str:
        """A hash of the caller's weights and the chat template (cache keys use it)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.source_model, self.tok)
        return self._fingerprint

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        """``cfg.n`` completions for each prompt, in order.

        Args:
            prompts: Chats (the chat template is applied) or plain strings.
            cfg: Settings shared by every prompt (a server gives each request its own through
                :meth:`decode_engine`).
        """
        ids = [encode_prompt(self.tok, p) for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        if self.batches_continuously(ids, cfg):
            return self._continuous(ids, order, cfg)
        out: list[list[str]] = [[] for _ in prompts]
        bs = max(1, self.batch_size // max(1, cfg.n))
        steps = range(0, len(order), bs)
        batch = self._decode if self._own_loop else self._hf_generate
        for start in tqdm(steps, desc="generate", disable=not self.progress or len(steps) < 2, leave=False):
            chunk = order[start : start + bs]
            for i, texts_i in zip(chunk, batch([ids[i] for i in chunk], cfg)):
                out[i] = texts_i
        return out

    def decode_engine(self) -> DecodeEngine | None:
        """A new continuous-batching engine over this model, or None where the model cannot use one.

        Rows of one engine may each have their own settings; feed it from threads through
        ``tunelab.generate.batching.BatchingLoop``. Models with sliding-window caches or
        prompt-learning adapters get None (callers then use :meth:`generate`).
        """
        return DecodeEngine(self) if self._own_loop and self._plain_cache() else None

    def _plain_cache(self) -> bool:
        """Whether every layer's KV cache is a plain growing one (rows can be merged and dropped)."""
        if self._plain is None:
            layers = getattr(DynamicCache(config=self.model.config), "layers", None)
            self._plain = bool(layers) and all(type(x) is DynamicLayer for x in layers)
        return self._plain

    def batches_continuously(self, ids: list[list[int]], cfg: GenerationConfig) -> bool:
        """Whether :meth:`generate` decodes these encoded prompts with continuous batching (plain KV
        caches, or a sliding window they fit) rather than fixed left-padded batches."""
        return self._own_loop and (self._plain_cache() or self._fits_window(ids, cfg))

    def _fits_window(self, ids: list[list[int]], cfg: GenerationConfig) -> bool:
        """Whether every prompt plus its token budget fits the model's sliding window (Gemma3: 512). Then
        the sliding layers see every token, as plain layers do, and continuous batching gives the same
        tokens (its merged caches are plain: a sliding layer evicts nothing at these lengths)."""
        cfg_text = self.model.config
        cfg_text = getattr(cfg_text, "get_text_config", lambda: cfg_text)()
        window = getattr(cfg_text, "sliding_window", None)
        return bool(window) and bool(ids) and max(map(len, ids)) + cfg.max_new_tokens <= int(window)

    def _ends(self, cfg: GenerationConfig) -> tuple[set[int], list[str], int]:
        """(end tokens, stop strings, tokens of decoded tail that can hold the longest stop string)."""
        stops = [s for s in cfg.stop if s]
        return set(self.eos_ids), stops, max((len(x) for x in stops), default=0) + 4

    def _extend(self, row: list[int], t: int, ends: tuple[set[int], list[str], int]) -> bool:
        """Append token ``t`` to ``row`` unless it ends the sequence; whether the row goes on.

        A stop string ends the row once it appears in the decoded tail (a few tokens past the
        longest stop string: enough to hold it), so no row is decoded whole at every step.
        """
        eos, stops, tail = ends
        if t in eos:
            return False
        row.append(t)
        if not stops:
            return True
        text = self.tok.decode(row[-tail:])
        return not any(x in text for x in stops)

    def _texts(self, rows: list[list[int]], cfg: GenerationConfig) -> list[str]:
        return [cut_at_stop(t, cfg.stop) for t in self.tok.batch_decode(rows, skip_special_tokens=True)]

    def _continuous(self, ids: list[list[int]], order: list[int], cfg: GenerationConfig) -> list[list[str]]:
        """All prompts through one :class:`DecodeEngine`, longest first; completions in prompt order."""
        engine = DecodeEngine(self)
        requests = {i: engine.submit(ids[i], cfg) for i in order}
        todo = sum(not r.done for r in requests.values())
        with tqdm(total=todo, desc="generate", disable=not self.progress or todo < 2, leave=False) as bar:
            while engine.busy:
                bar.update(len(engine.step()))
        for r in requests.values():
            r.wait()  # raises a request's error (an empty prompt)
        return [requests[i].texts for i in range(len(ids))]

    def _left_pad(self, batch_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, batch_ids))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch_ids], device=self.device)
        return input_ids, mask

    def _decode(self, batch_ids: list[list[int]], cfg: GenerationConfig) -> list[list[str]]:
        """Prefill the left-padded batch once, then decode; finished rows leave the batch."""
        input_ids, mask = self._left_pad(batch_ids)
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() does
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=keep_last(device=self.device),
            **{self._cache_kw: cache},
        )
        logits = out.logits[:, -1].float()
        next_pos = pos[:, -1] + 1
        if cfg.n > 1:  # n samples per prompt share one prefill
            cache.batch_repeat_interleave(cfg.n)
            logits, mask, next_pos = (t.repeat_interleave(cfg.n, 0) for t in (logits, mask, next_pos))
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed) if cfg.temperature > 0 else None
        ends = self._ends(cfg)
        live = list(range(len(batch_ids) * cfg.n))  # output row of each batch row
        tokens: list[list[int]] = [[] for _ in live]
        for step in range(cfg.max_new_tokens):
            picked = pick_tokens(logits, cfg, gen)
            self.generated_tokens += len(live)
            keep = [j for j, t in enumerate(picked.tolist()) if self._extend(tokens[live[j]], t, ends)]
            if not keep or step == cfg.max_new_tokens - 1:
                break
            if len(keep) < len(live):
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                picked, mask, next_pos = picked[idx], mask[idx], next_pos[idx]
                live = [live[j] for j in keep]
            logits, mask, next_pos = decode_step(self.model, picked, mask, next_pos, cache, self._cache_kw)
        texts = self._texts(tokens, cfg)
        return [texts[i * cfg.n : (i + 1) * cfg.n] for i in range(len(batch_ids))]

    def _hf_generate(self, batch_ids: list[list[int]], cfg: GenerationConfig) -> list[list[str]]:
        """``model.generate`` (prompt-learning peft models: their virtual tokens live in its hooks)."""
        input_ids, mask = self._left_pad(batch_ids)
        width = input_ids.shape[1]
        sample = cfg.temperature > 0
        if sample:
            torch.manual_seed(cfg.seed)
        kwargs = dict(
            do_sample=sample,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=cfg.n,
            pad_token_id=self.tok.pad_token_id if self.tok.pad_token_id is not None else 0,
            eos_token_id=self.eos_ids,
            use_cache=True,
        )
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if cfg.stop:
            kwargs.update(stop_strings=cfg.stop, tokenizer=self.tok)
        gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        eos = set(self.eos_ids)
        new = gen[:, width:].tolist()
        self.generated_tokens += sum(n_generated(row, eos) for row in new)
        texts = self._texts(new, cfg)
        return [texts[i * cfg.n : (i + 1) * cfg.n] for i in range(len(batch_ids))]

    @property
    def eos_ids(self) -> list[int]:
        """Token ids that end a completion: the tokenizer's and generation config's EOS and known
        end-of-turn tokens (read at each call: the generation config may change)."""
        ids = {self.tok.eos_token_id}
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
            tid = self.tok.convert_tokens_to_ids(t)
            if isinstance(tid, int) and tid != self.tok.unk_token_id and tid >= 0:
                ids.add(tid)
        return sorted(i for i in ids if i is not None and not (isinstance(i, float) and math.isnan(i)))
