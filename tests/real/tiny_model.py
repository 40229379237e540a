"""A tiny model directory for real inference servers to serve with random weights: no download.

`python -m tests.real.tiny_model DIR [--template qwen|strict]` writes into DIR
- `config.json`: a small Qwen2ForCausalLM (hidden 128, 2 layers, vocabulary 4096, 64k positions),
  for vLLM's `--load-format dummy` (random weights);
- a byte-level BPE tokenizer trained on the spot (`tokenizers`) on this machine's Python sources,
  with Qwen's chat special tokens, `<tool_call>` and `<think>` tokens;
- `tokenizer_config.json` with a chat template: Qwen-style with tools (`qwen`), or one that, like
  Mistral's and Gemma's, refuses a system message anywhere but first (`strict`).

It needs `tokenizers` (the inference server's environment has it), not Parley's.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

VOCAB_SIZE = 4096
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
]
EOS, IM_START, IM_END = 0, 1, 2

# Chat templates (Jinja, as Hugging Face tokenizers carry them): Qwen's shape with tools, and one that
# refuses a system message anywhere but first, as Mistral's and Gemma's do.
TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATES = ("qwen", "strict")


def _corpus() -> Iterator[str]:
    """Python's own standard library: text and code, the same on every machine of a kind."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py"))[:400]:
        yield path.read_text(errors="replace")


def _config() -> dict:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 65536,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "vocab_size": VOCAB_SIZE,
        "bos_token_id": EOS,
        "eos_token_id": IM_END,
    }


def train_tokenizer():  # -> tokenizers.Tokenizer (imported here: Parley's environment lacks it)
    """The byte-level BPE tokenizer, trained on the spot: the same on every machine of a kind."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    return tokenizer


def write_model(directory: Path, template: str = "qwen") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    train_tokenizer().save(str(directory / "tokenizer.json"))
    (directory / "config.json").write_text(json.dumps(_config(), indent=2) + "\n")
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": EOS, "eos_token_id": [IM_END, EOS], "do_sample": True}, indent=2) + "\n"
    )
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 65536,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "additional_special_tokens": SPECIAL_TOKENS[1:],
        "chat_template": (TEMPLATES_DIR / f"{template}.jinja").read_text().rstrip("\n"),
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--template", choices=TEMPLATES, default="qwen")
    args = parser.parse_args(argv)
    print(write_model(args.directory, args.template), file=sys.stdout)


if __name__ == "__main__":
    main()
