"""The chat format: how one user message becomes the token ids a model sees, where its answer
ends, and whether a BOS token comes first. Training (through TRL) and generation both go
through the tokenizer's chat template; everything here is derived from that template and the
tokenizer, and is saved with M1 (the template in the tokenizer files, the stop tokens in the
model's ``generation_config``), so that every later stage reads the same format.

- **Prompt ids** are ``apply_chat_template([user], add_generation_prompt=True)``: the very call
  TRL's SFT and DPO trainers make for the prompt of a conversational example.
- **End of turn** is the first special token the template writes after an assistant message:
  ``<|im_end|>`` for ChatML (also for a base model such as Qwen2.5-0.5B whose ``eos_token`` is
  ``<|endoftext|>``), ``eos_token`` for the built-in template. Generation stops there.
- **BOS**: a tokenizer that puts a BOS token before plain text (Llama-2 style) expects one, but
  a chat template is tokenized without special tokens added, so the template must write it.
  The built-in template (for tokenizers without one) writes ``bos_token`` exactly when the
  tokenizer expects it.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

# The built-in template for tokenizers that ship none (base models such as Llama-2, the built-in
# world). The assistant turn ends with the EOS token and nothing after it, so SFT teaches the
# model to stop and no token is trained after the end of the answer.
_DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant:\n{{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ message['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:\n{% endif %}"
)


def default_template(bos: bool = False) -> str:
    """The built-in User/Assistant template, starting with ``bos_token`` when ``bos``."""
    return ("{{ bos_token }}" if bos else "") + _DEFAULT_TEMPLATE


DEFAULT_CHAT_TEMPLATE = default_template(bos=False)


def expects_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer puts its BOS token before plain text (Llama-2 style)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None):
    """Make a loaded tokenizer ready for chat-formatted, left-padded batches (in place).

    A tokenizer without a chat template gets ``chat_template`` or the built-in one (with BOS when
    the tokenizer expects it); the template is then saved with every model trained from it.
    """
    if tokenizer.chat_template is None:
        tokenizer.chat_template = chat_template or default_template(bos=expects_bos(tokenizer))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def prompt_ids(tokenizer: PreTrainedTokenizerBase, message: str) -> list[int]:
    """Token ids of a one-turn chat ending where the assistant's answer starts, exactly as
    TRL builds the prompt of a conversational example."""
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(out["input_ids"])


_MARK = "Zq7 marker"


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the template writes right after an assistant message, or ``eos``.

    Found by rendering a conversation whose answer is a marker and tokenizing what follows it.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARK}], tokenize=False
    )
    tail = text[text.rindex(_MARK) + len(_MARK):]
    special = set(tokenizer.all_special_ids)
    for token in tokenizer(tail, add_special_tokens=False).input_ids:
        if token in special and token != tokenizer.pad_token_id or token == tokenizer.eos_token_id:
            return token
    return tokenizer.eos_token_id


def stop_ids(tokenizer: PreTrainedTokenizerBase, generation_config=None) -> list[int]:
    """Tokens that end an answer: the template's end of turn first, then EOS, then any the
    model's generation config lists."""
    ids = [end_of_turn_id(tokenizer), tokenizer.eos_token_id]
    if generation_config is not None:
        eos = generation_config.eos_token_id
        ids += [eos] if isinstance(eos, int) else list(eos or [])
    return [i for i in dict.fromkeys(ids) if i is not None]


def save_format(model, tokenizer: PreTrainedTokenizerBase) -> None:
    """Write the chat format into the model's generation config before it is saved: generation
    then stops at the end of turn even in a tool that knows nothing of this module."""
    model.generation_config.eos_token_id = stop_ids(tokenizer, model.generation_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        model.generation_config.bos_token_id = tokenizer.bos_token_id
