"""In-process vLLM generation (GPU), with a LoRA adapter served without merging.

``vllm`` is optional (``pip install tunelab[vllm]``); importing this module never fails, creating a
:class:`VLLMGenerator` without vllm raises ImportError with the install hint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tunelab.generate.base import GenerationConfig, Prompt, cut_at_stop, encode_prompt


def _file_digest(h: Any, folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        f = folder / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes() if f.stat().st_size < 512 * 2**20 else str(f.stat().st_mtime_ns).encode())


def vllm_fingerprint(model_path: str, adapter: str | None) -> str:
    """Hash of the model path and config, and of the adapter's weights and config when given."""
    h = hashlib.sha256(str(model_path).encode())
    if Path(model_path).is_dir():
        _file_digest(h, Path(model_path), ("config.json", "tokenizer_config.json"))
    if adapter:
        h.update(str(adapter).encode())
        _file_digest(h, Path(adapter), ("adapter_config.json", "adapter_model.safetensors"))
    return "vllm:" + h.hexdigest()[:16]


class VLLMGenerator:
    """Generation with vllm's ``LLM`` engine; chat prompts use the tokenizer's chat template.

    Args:
        model_path: HF checkpoint folder or hub id of the base model.
        adapter: A peft LoRA adapter folder (e.g. a run's ``final/``), applied via ``LoRARequest``.
        max_lora_rank: Largest LoRA rank the engine reserves room for.
        gpu_memory_utilization: Fraction of GPU memory vllm may take.
        dtype: Weights dtype (``auto``, ``bfloat16``, ``float16``).
        **engine_kw: More ``vllm.LLM`` keyword arguments.
    """

    def __init__(
        self,
        model_path: str,
        adapter: str | None = None,
        max_lora_rank: int = 64,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        **engine_kw: Any,
    ) -> None:
        try:  # vllm is a heavy optional extra (GPU; it replaces torch): imported only when used
            from vllm import LLM
        except ImportError as e:
            raise ImportError("VLLMGenerator needs vllm (GPU): pip install 'tunelab[vllm]'") from e
        lora = {"enable_lora": True, "max_lora_rank": max_lora_rank} if adapter else {}
        self.llm = LLM(
            model=str(model_path),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            **lora,
            **engine_kw,
        )
        self.adapter = adapter
        self.fingerprint = vllm_fingerprint(str(model_path), adapter)

    def _lora_request(self) -> Any:
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest  # optional extra, deferred (see __init__)

        return LoRARequest("adapter", 1, str(self.adapter))

    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        """``cfg.n`` completions per prompt, in order (vllm batches and schedules internally)."""
        from vllm import SamplingParams  # optional extra, deferred (see __init__)

        params = SamplingParams(
            n=cfg.n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_new_tokens,
            stop=list(cfg.stop) or None,
            seed=cfg.seed,
        )
        from vllm.inputs import TokensPrompt  # optional extra, deferred (see __init__)

        # token ids, as HFGenerator feeds them: vllm would add special tokens to rendered chat text
        # (a second BOS where the chat template already wrote one)
        tok = self.llm.get_tokenizer()
        inputs = [TokensPrompt(prompt_token_ids=encode_prompt(tok, p)) for p in prompts]
        outputs = self.llm.generate(inputs, params, lora_request=self._lora_request(), use_tqdm=False)
        return [[cut_at_stop(o.text, cfg.stop) for o in out.outputs] for out in outputs]
