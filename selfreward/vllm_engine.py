"""The vLLM backend of the :class:`selfreward.generation.Engine` protocol (``generation.backend=vllm``).

Same contract as :class:`selfreward.generation.HFEngine`, so that a stage cannot tell them apart:

- Prompts are the same token ids (:func:`selfreward.chat.prompt_ids`, so BOS and the chat template
  are the tokenizer's, not vLLM's), sequences stop at the same tokens
  (:func:`selfreward.chat.stop_ids`) and completions are decoded with the same tokenizer, special
  tokens removed; a :class:`~selfreward.generation.Completion` says whether it hit
  ``max_new_tokens`` (vLLM's ``finish_reason == "length"``).
- Sampling: all requests go to vLLM at once, ``n`` samples per prompt (``SamplingParams.n``,
  which shares the prompt's KV cache), temperature and top-p as configured, top-k off. Each
  request gets its own seed derived from ``seed``, so a run is reproducible; vLLM's random
  stream is not torch's, so sampled texts differ from the HF engine's (their distribution does not).
- Greedy (temperature 0): one sequence per prompt, repeated ``n`` times as the HF engine would
  produce them.
- :meth:`VLLMEngine.continuation_logprobs` (the judge's expected-score mode): the continuations
  are split off the prefix exactly as the HF engine does; the one-token continuations of a
  context (the score digits " 1" ... " 5") share one request, which decodes one token from that
  context and returns the log-probabilities of exactly those tokens
  (``SamplingParams.logprob_token_ids``: full-vocabulary values, not renormalised, not limited
  to the top k); a continuation of several tokens is scored with ``prompt_logprobs`` over
  context + continuation.
- Prefix caching is on by default: every judgment request starts with the same rubric.
- On CPU, chunked prefill is off: vLLM 0.32's CPU worker fails ("CPU Generator does not use
  offset") when a seeded request's prompt is split across steps.
- The model's ``generation_config.json`` is not applied as default sampling settings
  (``generation_config="vllm"``): the config's values are the only ones, as with HF.

:meth:`VLLMEngine.close` shuts the engine down and frees its (GPU) memory so that training can
run afterwards in the same process; :func:`selfreward.generation.close_engine` calls it.

vLLM is imported only when an engine is built: the rest of the project never needs it. This
module itself imports nothing heavy at the top, so that the config schema can use
:class:`VLLMSettings`.
"""

from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass


@dataclass
class VLLMSettings:
    """``generation.vllm``: how the vLLM engine is built (used only with ``generation.backend=vllm``).

    The model, dtype and ``trust_remote_code`` come from ``model``; these are vLLM's own knobs.
    """

    gpu_memory_utilization: float = 0.9  # fraction of GPU memory vLLM may take (weights + KV cache)
    max_model_len: int | None = None  # prompt + answer tokens; null: the model's own limit
    tensor_parallel_size: int = 1  # GPUs one model is split over
    max_num_seqs: int | None = None  # sequences scheduled together; null: vLLM's default
    enforce_eager: bool = False  # no CUDA graphs / compilation: slower, but starts faster
    enable_prefix_caching: bool = True  # every judgment shares the rubric, every sample its prompt
    cpu_kvcache_space_gib: int = 1  # vLLM on CPU: KV cache size (VLLM_CPU_KVCACHE_SPACE, unless set)


class VLLMEngine:
    """A vLLM ``LLM`` behind the :class:`~selfreward.generation.Engine` protocol."""

    def __init__(self, model_path: str, tokenizer, *, dtype="auto",
                 trust_remote_code: bool = False, settings: VLLMSettings | None = None, seed: int = 0):
        import torch

        from selfreward import chat

        settings = settings or VLLMSettings()
        # vLLM on CPU sizes its KV cache from this variable (GiB); its default (0) means 4 GiB
        # on most builds, more than a small machine wants. Set only when the user has not.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kvcache_space_gib))
        from vllm import LLM

        self.tokenizer = tokenizer
        self.eos_token_ids = chat.stop_ids(tokenizer, _generation_config(model_path))
        kwargs = dict(
            model=model_path,
            tokenizer=model_path,
            dtype=str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype,
            trust_remote_code=trust_remote_code,
            seed=seed,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            enforce_eager=settings.enforce_eager,
            enable_prefix_caching=settings.enable_prefix_caching,
            generation_config="vllm",
        )
        if settings.max_model_len is not None:
            kwargs["max_model_len"] = settings.max_model_len
        if settings.max_num_seqs is not None:
            kwargs["max_num_seqs"] = settings.max_num_seqs
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vLLM 0.32 on CPU: a seeded request whose prompt is split by chunked prefill kills the
            # engine ("CPU Generator does not use offset": it rewinds the generator as on CUDA).
            # Without chunking, no prompt is split; a step then takes whole prompts only.
            kwargs["enable_chunked_prefill"] = False
        self.llm = LLM(**kwargs)

    # --- Engine protocol ----------------------------------------------------------------------

    def generate(self, messages, sampling, *, n=1, seed=0, desc="generate", prefixes=None):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from selfreward.generation import prompt_rows

        if not messages:
            return []
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_rows(self.tokenizer, messages, prefixes)]
        greedy = sampling.temperature <= 0
        common = dict(
            max_tokens=sampling.max_new_tokens,
            min_tokens=sampling.min_new_tokens,
            stop_token_ids=list(self.eos_token_ids),
            detokenize=False,  # decoded below with the project's tokenizer, as the HF engine does
            skip_special_tokens=True,
        )
        if greedy:
            params = SamplingParams(n=1, temperature=0.0, **common)
        else:
            # One seed per request, n apart: vLLM gives the i-th of n samples seed + i.
            base = random.Random(seed).randrange(2**31)
            params = [
                SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                               seed=base + i * n, **common)
                for i in range(len(prompts))
            ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outputs:
            texts = [self._completion(c) for c in sorted(out.outputs, key=lambda c: c.index)]
            results.append(texts * n if greedy else texts)
        return results

    def continuation_logprobs(self, messages, prefixes, continuations):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from selfreward.generation import continuation_tokens

        k = len(continuations)
        logprobs = [0.0] * (len(messages) * k)
        # The same split as HFEngine: prefix and continuation tokenized together, cut where the
        # prefix alone stops matching. Single-token targets are grouped by their context.
        single: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        multi: list[tuple[int, list[int], list[int]]] = []
        for index, context, target in continuation_tokens(self.tokenizer, messages, prefixes, continuations):
            if len(target) == 1:
                single.setdefault(tuple(context), []).append((index, target[0]))
            else:
                multi.append((index, context, target))
        requests, params, reads = [], [], []
        for context, wanted in single.items():
            ids = list(dict.fromkeys(t for _, t in wanted))
            for start in range(0, len(ids), _MAX_IDS):
                chunk = ids[start : start + _MAX_IDS]
                requests.append(TokensPrompt(prompt_token_ids=list(context)))
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=chunk,
                                             detokenize=False))
                reads.append(("single", [(out, t) for out, t in wanted if t in chunk]))
        for out, context, target in multi:
            requests.append(TokensPrompt(prompt_token_ids=context + target))
            params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False))
            reads.append(("multi", (out, len(context), target)))
        if not requests:
            return [logprobs[m * k : (m + 1) * k] for m in range(len(messages))]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        for result, (kind, read) in zip(outputs, reads, strict=True):
            if kind == "single":
                step = result.outputs[0].logprobs[0]
                for out, token in read:
                    logprobs[out] = float(step[token].logprob)
            else:
                out, start, target = read
                rows = result.prompt_logprobs
                logprobs[out] = float(sum(rows[start + j][t].logprob for j, t in enumerate(target)))
        return [logprobs[m * k : (m + 1) * k] for m in range(len(messages))]

    # --- Memory ------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the vLLM engine down (its engine process too) and free its memory now."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # already shut down, or a vLLM without this attribute: drop it anyway
            pass
        del llm
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:
            pass
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # --- Helpers -----------------------------------------------------------------------------

    def _completion(self, c):
        from selfreward.generation import Completion

        text = self.tokenizer.decode(list(c.token_ids), skip_special_tokens=True)
        return Completion(text, c.finish_reason != "length")


# vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS in vLLM 0.32: the most token ids one request may score.
_MAX_IDS = 128


def _generation_config(model_path: str):
    """The model folder's generation config (its stop tokens), as ``from_pretrained`` gives the
    HF engine's model one."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except (OSError, ValueError):  # no generation_config.json: what from_pretrained would derive
        try:
            return GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_path))
        except (OSError, ValueError):
            return None
