"""One generation engine for every stage that generates: prompt writing, sampling, judging, eval.

Stages only see the :class:`Engine` protocol: a list of user messages in, texts out. The
Hugging Face backend here batches requests, sorts them by length so that padding is small,
pads on the left, keeps the KV cache on and stops each sequence at end of sequence. The vLLM
backend (``generation.backend=vllm``, :mod:`selfreward.vllm_engine`) implements the same two
methods; :func:`load_engine` returns the configured one and :func:`close_engine` frees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from selfreward import chat
from selfreward.rundir import SelfRewardError
from selfreward.vllm_engine import VLLMSettings  # noqa: F401  (the schema of generation.vllm)


@dataclass(frozen=True)
class Sampling:
    """How to decode: ``temperature == 0`` means greedy."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 32
    # The end of turn cannot come before this many new tokens (1: a continuation writes something).
    min_new_tokens: int = 0


class Completion(str):
    """A generated text that also says whether the model ended it (``finished``) or it was cut
    at ``max_new_tokens``. It is a ``str``, so stages that only need the text use it as one."""

    finished: bool

    def __new__(cls, text: str, finished: bool = True):
        obj = super().__new__(cls, text)
        obj.finished = finished
        return obj


def finished(text: str) -> bool:
    """Whether a generated text ended by itself (a plain ``str`` from another engine counts as ended)."""
    return getattr(text, "finished", True)


class Engine(Protocol):
    def generate(
        self, messages: list[str], sampling: Sampling, *, n: int = 1, seed: int = 0, desc: str = "generate",
        prefixes: list[str] | None = None,
    ) -> list[list[str]]:
        """For each user message, ``n`` completions of the assistant turn (texts, special tokens
        removed); a :class:`Completion` also tells whether it hit ``max_new_tokens``. With
        ``prefixes``, message i's assistant turn already starts with ``prefixes[i]`` and the texts
        are what follows it."""
        ...

    def continuation_logprobs(
        self, messages: list[str], prefixes: list[str], continuations: list[str]
    ) -> list[list[float]]:
        """For each user message, with the assistant turn started by its prefix, the
        log-probability of each continuation string (summed over its tokens)."""
        ...

    # An engine may also have ``close()``, which frees its memory (GPU memory, engine
    # processes) at once: :func:`close_engine` calls it where it exists.


def close_engine(engine) -> None:
    """Free an engine's memory now (its ``close()``, where it has one), so that training can run
    after generation in the same process. Dropping the last reference is not enough for vLLM,
    whose engine lives in another process and holds its GPU memory until shut down."""
    close = getattr(engine, "close", None)
    if close is not None:
        close()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise SelfRewardError(f"model.dtype={dtype!r} is not a torch dtype (try float32, bfloat16)") from None


def check_model_path(path: str) -> None:
    """Fail early and clearly on a local path that does not exist (rather than on a hub lookup)."""
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        from selfreward.models import prepare_hint

        hint = prepare_hint(path)
        raise SelfRewardError(f"model path {path} does not exist" + (f"; make it with: {hint}" if hint else ""))


def load_tokenizer(path: str, chat_template: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer and make it ready for chat-formatted, left-padded batches
    (:func:`selfreward.chat.prepare_tokenizer`)."""
    check_model_path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise SelfRewardError(f"cannot load a tokenizer from {path!r}: {str(e).splitlines()[0]}") from None
    return chat.prepare_tokenizer(tokenizer, chat_template)


def load_model(path: str, *, dtype: str = "auto", device: str = "auto", attn_implementation: str | None = None,
               trust_remote_code: bool = False) -> PreTrainedModel:
    """Load a causal LM (hub id or local folder) onto the configured device, in eval mode."""
    dev = resolve_device(device)
    kwargs = {"dtype": resolve_dtype(dtype, dev), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    check_model_path(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise SelfRewardError(f"cannot load a model from {path!r}: {str(e).splitlines()[0]}") from None
    return model.to(dev).eval()


# Kept under its old name for callers outside the package.
chat_prompt_ids = chat.prompt_ids


def prompt_rows(tokenizer, messages: list[str], prefixes: list[str] | None = None) -> list[list[int]]:
    """Each message's chat prompt ids, followed by its assistant prefix's ids where ``prefixes``
    is given (the engines' ``generate(..., prefixes=...)``)."""
    prompts = [chat.prompt_ids(tokenizer, m) for m in messages]
    if prefixes is None:
        return prompts
    if len(prefixes) != len(messages):
        raise ValueError(f"{len(prefixes)} prefixes for {len(messages)} messages")
    return [p + tokenizer.encode(x, add_special_tokens=False) for p, x in zip(prompts, prefixes)]


def continuation_tokens(tokenizer, messages: list[str], prefixes: list[str], continuations: list[str]):
    """For every (message, continuation) pair, ``(index, context ids, target ids)`` with
    ``index = message * len(continuations) + continuation``; pairs with an empty target are left
    out. Prefix and continuation are tokenized together and split where the prefix alone stops
    matching, so a merge across the boundary is scored as the model would write it. Shared by
    the engines' ``continuation_logprobs``."""
    k = len(continuations)
    for m, (message, prefix) in enumerate(zip(messages, prefixes, strict=True)):
        prompt = chat.prompt_ids(tokenizer, message)
        alone = tokenizer.encode(prefix, add_special_tokens=False)
        for c, cont in enumerate(continuations):
            joint = tokenizer.encode(prefix + cont, add_special_tokens=False)
            split = next((i for i, (a, b) in enumerate(zip(alone, joint)) if a != b), min(len(alone), len(joint)))
            if joint[split:]:
                yield m * k + c, prompt + joint[:split], joint[split:]


class HFEngine:
    """The Hugging Face ``generate`` backend."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        # The template's end of turn (<|im_end|> for ChatML), EOS and the model's own stop tokens.
        self.eos_token_ids = chat.stop_ids(tokenizer, model.generation_config)

    def close(self) -> None:
        """Drop the model and return its GPU memory to the device."""
        self.model = None
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _batches(self, sequences: list[list[int]], desc: str):
        """Yield (indices, input_ids, attention_mask) for length-sorted, left-padded batches."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        pad = self.tokenizer.pad_token_id
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=len(starts) < 2):
            idx = order[start : start + self.batch_size]
            width = max(len(sequences[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = sequences[i]
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            yield idx, ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def generate(self, messages, sampling, *, n=1, seed=0, desc="generate", prefixes=None):
        prompts = prompt_rows(self.tokenizer, messages, prefixes)
        # Each of the n samples is its own row so that batches hold a fixed number of sequences.
        rows = [p for p in prompts for _ in range(n)]
        texts: list[str] = [""] * len(rows)
        torch.manual_seed(seed)
        greedy = sampling.temperature <= 0
        kwargs = dict(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            use_cache=True,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_ids,
        )
        if sampling.min_new_tokens:
            kwargs["min_new_tokens"] = sampling.min_new_tokens
        if greedy:
            # Unset the model's sampling defaults so transformers does not warn about them.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        stops = torch.tensor(self.eos_token_ids)
        for idx, ids, mask in self._batches(rows, desc):
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            new = out[:, ids.shape[1] :]
            # A row that holds no stop token ran out of max_new_tokens: its text is truncated.
            ended = torch.isin(new.cpu(), stops).any(dim=1)
            for row, i in enumerate(idx):
                texts[i] = Completion(self.tokenizer.decode(new[row], skip_special_tokens=True), bool(ended[row]))
        return [texts[k * n : (k + 1) * n] for k in range(len(messages))]

    @torch.inference_mode()
    def continuation_logprobs(self, messages, prefixes, continuations):
        # Prefix and continuation are tokenized together and split where the prefix alone stops
        # matching, so merges across the boundary are handled. A row holds the context and all
        # but the last target token; continuations of one token (the score digits) share a row,
        # so a message costs one forward pass, and only the last positions' logits are computed.
        rows: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        k = len(continuations)
        for index, context, target in continuation_tokens(self.tokenizer, messages, prefixes, continuations):
            rows.setdefault(tuple(context + target[:-1]), []).append((index, target))
        logprobs = [0.0] * (len(messages) * k)
        keys = list(rows)
        keep = max((len(t) for reads in rows.values() for _, t in reads), default=1)
        for idx, ids, mask in self._batches([list(key) for key in keys], "score continuations"):
            # Left padding puts every row's last tokens in the last columns.
            logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(idx):
                for out, target in rows[keys[i]]:
                    positions = range(keep - len(target), keep)
                    logprobs[out] = sum(logp[row, p, t].item() for p, t in zip(positions, target))
        return [logprobs[m * k : (m + 1) * k] for m in range(len(messages))]


BACKENDS = ("hf", "vllm")


def check_backend(cfg_generation) -> None:
    """At config check time: the backend is known and, for ``vllm``, the package imports here.

    Raises :class:`selfreward.config.ConfigError` with one line saying how to get vLLM.
    """
    from selfreward.config import ConfigError

    backend = cfg_generation.backend
    if backend not in BACKENDS:
        raise ConfigError(f"invalid config: generation.backend={backend!r}; allowed: one of {', '.join(BACKENDS)}")
    if backend == "vllm":
        try:
            import vllm  # noqa: F401
        except Exception as e:  # an ImportError, or a broken install failing as it loads
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ConfigError(
                f"invalid config: generation.backend=vllm needs the vllm package, which cannot be imported "
                f"in this Python ({type(e).__name__}: {first}); on a GPU machine `pip install vllm`, on a "
                f"CPU machine make a separate environment with `bash scripts/install_vllm_cpu.sh` and run "
                f"from it, or use generation.backend=hf"
            ) from None
        settings = vllm_settings(cfg_generation)
        if not 0 < settings.gpu_memory_utilization <= 1:
            raise ConfigError(f"invalid config: generation.vllm.gpu_memory_utilization="
                              f"{settings.gpu_memory_utilization!r}; allowed: in (0, 1]")


def vllm_settings(cfg_generation) -> VLLMSettings:
    """``generation.vllm`` as :class:`VLLMSettings` (the defaults where the config has none)."""
    node = getattr(cfg_generation, "vllm", None)
    if node is None:
        return VLLMSettings()
    if isinstance(node, VLLMSettings):
        return node
    from omegaconf import DictConfig, OmegaConf

    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return VLLMSettings(**values)


def load_engine(model_path: str, cfg_model, cfg_generation):
    """The engine for the model in ``model_path``, with the configured backend
    (``generation.backend``: ``hf`` or ``vllm``). Free it with :func:`close_engine`."""
    tokenizer = load_tokenizer(model_path, cfg_model.chat_template, cfg_model.trust_remote_code)
    if getattr(cfg_generation, "backend", "hf") == "vllm":
        from selfreward.vllm_engine import VLLMEngine

        return VLLMEngine(
            model_path,
            tokenizer,
            dtype=resolve_dtype(cfg_model.dtype, resolve_device(cfg_model.device)),
            trust_remote_code=cfg_model.trust_remote_code,
            settings=vllm_settings(cfg_generation),
        )
    model = load_model(
        model_path,
        dtype=cfg_model.dtype,
        device=cfg_model.device,
        attn_implementation=cfg_model.attn_implementation,
        trust_remote_code=cfg_model.trust_remote_code,
    )
    return HFEngine(model, tokenizer, batch_size=cfg_generation.batch_size)
