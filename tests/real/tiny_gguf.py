"""A tiny GGUF for llama.cpp to serve: random weights, no download.

`python -m tests.real.tiny_gguf OUT.gguf [--template qwen|strict] [--pooling mean|last]` writes one
file:
- the model of `tiny_model.py` (qwen2: hidden 128, 2 layers, 4 heads and 2 KV heads, vocabulary
  4096, 64k positions) with seeded random F32 weights, the same file on every run; its output
  projection is its own (tiny_model's is tied to the embeddings), so that greedy decoding writes
  varied words;
- the same byte-level BPE tokenizer, trained on the spot (`tiny_model.train_tokenizer`), as a
  gpt2-style vocabulary: tokens, token types (the chat special tokens are control tokens), merges,
  and the ids of `<|endoftext|>` (bos, pad) and `<|im_end|>` (eos); llama.cpp's `gpt-2`
  pre-tokenizer splits text as the tokenizer's ByteLevel pre-tokenizer does;
- the chat template of `templates/` as `tokenizer.chat_template`;
- with `--pooling mean|last`, the pooling its embeddings take (`qwen2.pooling_type`): without it,
  llama.cpp's server (`--embedding true`) answers one vector per token of each input.

It needs `gguf`, `numpy` and `tokenizers` (llama.cpp's environment has them), not Parley's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .tiny_model import EOS, IM_END, SPECIAL_TOKENS, TEMPLATES, TEMPLATES_DIR, VOCAB_SIZE, _config, train_tokenizer

SEED = 20240601
WEIGHT_STD = 0.02


def _vocabulary() -> tuple[list[str], list[int], list[str]]:
    """Tokens in id order, their gguf token types, and the merges ("a b"), padded to VOCAB_SIZE
    with unused tokens should the training have stopped short of it."""
    import gguf

    tokenizer = train_tokenizer()
    by_id = {index: token for token, index in tokenizer.get_vocab(with_added_tokens=True).items()}
    if len(by_id) > VOCAB_SIZE or sorted(by_id) != list(range(len(by_id))):
        raise RuntimeError(f"the tokenizer's ids are not 0..{VOCAB_SIZE - 1}")
    tokens = [by_id[index] for index in range(len(by_id))]
    types = [gguf.TokenType.CONTROL if token in SPECIAL_TOKENS else gguf.TokenType.NORMAL for token in tokens]
    for index in range(len(tokens), VOCAB_SIZE):
        tokens.append(f"<|unused_{index}|>")
        types.append(gguf.TokenType.UNUSED)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]
    return tokens, [int(kind) for kind in types], merges


POOLING = ("mean", "last")


def write_gguf(path: Path, template: str = "qwen", pooling: str | None = None) -> Path:
    import gguf
    import numpy as np

    config = _config()
    hidden, heads, kv_heads = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads
    ffn, vocab = config["intermediate_size"], config["vocab_size"]
    tokens, types, merges = _vocabulary()

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch="qwen2")
    writer.add_name("tiny")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(EOS)
    writer.add_eos_token_id(IM_END)
    writer.add_pad_token_id(EOS)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template((TEMPLATES_DIR / f"{template}.jinja").read_text().rstrip("\n"))
    if pooling is not None:
        writer.add_pooling_type(gguf.PoolingType[pooling.upper()])

    rng = np.random.default_rng(SEED)

    def matrix(rows: int, columns: int) -> np.ndarray:
        # numpy's (rows, columns) is ggml's {columns, rows}: Hugging Face's (out, in) layout.
        return (rng.standard_normal((rows, columns)) * WEIGHT_STD).astype(np.float32)

    def ones(size: int) -> np.ndarray:
        return np.ones(size, dtype=np.float32)

    def zeros(size: int) -> np.ndarray:
        return np.zeros(size, dtype=np.float32)

    writer.add_tensor("token_embd.weight", matrix(vocab, hidden))
    for layer in range(config["num_hidden_layers"]):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones(hidden))
        writer.add_tensor(f"{block}.attn_q.weight", matrix(heads * head_dim, hidden))
        writer.add_tensor(f"{block}.attn_q.bias", zeros(heads * head_dim))
        writer.add_tensor(f"{block}.attn_k.weight", matrix(kv_heads * head_dim, hidden))
        writer.add_tensor(f"{block}.attn_k.bias", zeros(kv_heads * head_dim))
        writer.add_tensor(f"{block}.attn_v.weight", matrix(kv_heads * head_dim, hidden))
        writer.add_tensor(f"{block}.attn_v.bias", zeros(kv_heads * head_dim))
        writer.add_tensor(f"{block}.attn_output.weight", matrix(hidden, heads * head_dim))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones(hidden))
        writer.add_tensor(f"{block}.ffn_gate.weight", matrix(ffn, hidden))
        writer.add_tensor(f"{block}.ffn_up.weight", matrix(ffn, hidden))
        writer.add_tensor(f"{block}.ffn_down.weight", matrix(hidden, ffn))
    writer.add_tensor("output_norm.weight", ones(hidden))
    # Untied, unlike tiny_model's: tied random embeddings make the last token the likeliest next one,
    # so that greedy decoding (temperature 0) would repeat the prompt's last "\n" forever.
    writer.add_tensor("output.weight", matrix(vocab, hidden))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--template", choices=TEMPLATES, default="qwen")
    parser.add_argument("--pooling", choices=POOLING, help="how its embeddings are pooled (default: not at all)")
    args = parser.parse_args(argv)
    print(write_gguf(args.path, args.template, args.pooling), file=sys.stdout)


if __name__ == "__main__":
    main()
