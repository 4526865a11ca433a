"""The chat format (selfreward/chat.py): what TRL trains on is what generation feeds the model.

Three tokenizers: SmolLM2-135M-Instruct's (ChatML, a real one), the built-in world's (no template
of its own, no BOS) and a Llama-2-style one built here (no template, BOS before every text).
"""

from __future__ import annotations

import pytest
import torch
from smollm2 import smollm2  # noqa: F401  (the session fixture)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig, SFTConfig

from selfreward import chat
from selfreward.generation import HFEngine, Sampling, load_tokenizer
from selfreward.training import dpo_trainer, sft_trainer
from selfreward.data.builtin import build_tokenizer

TEXTS = ["User: What is two plus two?\nAssistant:\nFour. Score: 4", "hello world, answer the question"] * 20
EXAMPLES = [
    {"prompt": "What is two plus two?", "completion": "Four."},
    {"prompt": "Name a colour.", "completion": "Blue is a colour."},
]
PAIRS = [{"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."}]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def llama2_style_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-like BPE that puts <s> before every text and ships no chat template. As in
    Llama-2's vocabulary, no token joins a newline to other text."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"),
                                                 pre_tokenizers.Metaspace()])
    bpe.decoder = decoders.Metaspace()
    bpe.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"],
                                                   initial_alphabet=[chr(c) for c in range(32, 127)]))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def chatml_base_tokenizer() -> PreTrainedTokenizerFast:
    """Like Qwen2.5-0.5B (a base model): a ChatML template, but eos_token is <|endoftext|>."""
    tokenizer = build_tokenizer(TEXTS, vocab_size=300)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>",
                                  "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(params=["smollm2", "builtin", "llama2"])
def tokenizer(request, tmp_path):
    """A tokenizer saved and loaded the way every stage loads one (generation.load_tokenizer)."""
    if request.param == "smollm2":
        return load_tokenizer(request.getfixturevalue("smollm2"))
    raw = build_tokenizer(TEXTS, vocab_size=300) if request.param == "builtin" else llama2_style_tokenizer()
    if request.param == "builtin":
        raw.chat_template = None  # load_tokenizer gives it the built-in template, as it does base models
    raw.save_pretrained(tmp_path / "tok")
    return load_tokenizer(str(tmp_path / "tok"))


def _tiny_model(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))


def _generation_inputs(model, tokenizer, messages: list[str]) -> list[list[int]]:
    """The ids HFEngine really feeds model.generate for each message (left padding removed)."""
    seen = []
    generate = model.generate

    def spy(input_ids, attention_mask, **kwargs):
        seen.extend(row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask))
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    model.generate = spy
    engine = HFEngine(model, tokenizer)
    for message in messages:  # one at a time: the engine orders a batch by length
        engine.generate([message], Sampling(0.0, 1.0, 1))
    return seen


def test_trl_prompt_ids_equal_generation_and_labels_end_at_end_of_turn(tokenizer, tmp_path):
    model = _tiny_model(tokenizer)
    eot = chat.end_of_turn_id(tokenizer)
    fed = _generation_inputs(model, tokenizer, [e["prompt"] for e in EXAMPLES])
    assert fed == [chat.prompt_ids(tokenizer, e["prompt"]) for e in EXAMPLES]

    args = dict(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    sft = sft_trainer(model, tokenizer, EXAMPLES, SFTConfig(**args, completion_only_loss=True))
    for example, ids, row in zip(EXAMPLES, fed, sft.train_dataset):
        start = len(ids)
        assert row["input_ids"][:start] == ids  # TRL's prompt is what generation feeds
        assert all(label == -100 for label in row["labels"][:start])
        answer = row["labels"][start:]
        assert answer == row["input_ids"][start:]
        # The answer's tokens, then the end-of-turn token, and nothing after it.
        assert answer[-1] == eot and eot not in answer[:-1]
        assert tokenizer.decode(answer[:-1]).strip() == example["completion"]
        if chat.expects_bos(tokenizer):  # Llama-2 style: one BOS, first, in training and generation alike
            assert ids[0] == tokenizer.bos_token_id and row["input_ids"].count(tokenizer.bos_token_id) == 1

    dpo = dpo_trainer(model, _tiny_model(tokenizer), tokenizer, PAIRS, DPOConfig(**args))
    row = dpo.train_dataset[0]
    assert row["prompt_ids"] == chat.prompt_ids(tokenizer, PAIRS[0]["prompt"]) == fed[0]
    for key, text in (("chosen_ids", "Four."), ("rejected_ids", "Five.")):
        assert row[key][-1] == eot and eot not in row[key][:-1]
        assert tokenizer.decode(row[key][:-1]).strip() == text


def test_expects_bos_by_tokenizer():
    assert chat.expects_bos(llama2_style_tokenizer())
    assert not chat.expects_bos(build_tokenizer(TEXTS, vocab_size=300))


def test_end_of_turn_and_stop_ids():
    base = chatml_base_tokenizer()
    im_end = base.convert_tokens_to_ids("<|im_end|>")
    assert base.eos_token == "<|endoftext|>"
    assert chat.end_of_turn_id(base) == im_end
    assert chat.stop_ids(base) == [im_end, base.eos_token_id]

    builtin = build_tokenizer(TEXTS, vocab_size=300)
    assert chat.stop_ids(builtin) == [builtin.eos_token_id]

    # The engine of a ChatML base model whose generation config knows only <|endoftext|> stops
    # at <|im_end|> too.
    model = _tiny_model(base)
    model.generation_config.eos_token_id = base.eos_token_id
    assert HFEngine(model, chat.prepare_tokenizer(base)).eos_token_ids[0] == im_end


def test_builtin_template_writes_nothing_after_eos():
    tokenizer = chat.prepare_tokenizer(build_tokenizer(TEXTS, vocab_size=300))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], tokenize=False)
    assert text == "User: Hi\nAssistant:\nHello.<eos>"
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                         tokenize=False) == "User: Hi\nAssistant:\n"


def test_llama2_style_gets_bos_in_the_built_in_template():
    tokenizer = chat.prepare_tokenizer(llama2_style_tokenizer())
    assert tokenizer.chat_template == chat.default_template(bos=True)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                         tokenize=False)
    assert text == "<s>User: Hi\nAssistant:\n"


def test_smollm2_format(smollm2):  # noqa: F811
    tokenizer = load_tokenizer(smollm2)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert chat.end_of_turn_id(tokenizer) == im_end
    assert chat.stop_ids(tokenizer)[0] == im_end
    assert not chat.expects_bos(tokenizer)  # its template writes <|im_start|> itself
