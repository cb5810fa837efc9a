"""The model and GPU catalogs, and resolving a spec's ``base_model`` to an architecture.

The catalogs are data (``finetune_gen/knowledge/models.yaml`` and ``gpus.yaml``), read lazily and
cached. Nothing here imports torch or transformers: ``finetune-gen`` starts in a fraction of
a second.

``resolve_model`` looks in this order:

1. the catalog: exact id, an alias, or the same id in another letter case;
2. a local directory with a ``config.json`` (anything path-like must be one);
3. the hub's ``config.json`` (5 s timeout, cached under ``~/.cache/finetune-gen/configs/``),
   unless ``HF_HUB_OFFLINE=1`` or ``FINETUNE_GEN_OFFLINE=1``; a config cached by an earlier
   online run is still used offline.

Anything else is a :class:`~finetune_gen.errors.SpecError` naming the closest catalog ids.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from finetune_gen.errors import SpecError, short_repr
from finetune_gen.files.read import read_json_object, read_text_file
from finetune_gen.knowledge.architecture import Architecture

DATA_DIR = Path(__file__).parent  # models.yaml and gpus.yaml sit beside this module
HUB_TIMEOUT_S = 5.0
_TRUE = ("1", "true", "yes", "on")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


# ----------------------------------------------------------------------------- loading


@lru_cache(maxsize=None)
def _load_yaml(name: str) -> dict[str, Any]:
    import yaml  # lazy: only commands that need the catalog pay for it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~7x faster (STACK-NOTES)
    with open(DATA_DIR / name, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def _norm_gpu(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


# ----------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class GPU:
    """One GPU model: memory, peak dense throughput and an indicative price."""

    name: str
    display: str
    memory_gb: float
    supports_bf16: bool
    compute_capability: str
    tflops_bf16: float | None  # dense tensor-core peak; None without bf16 tensor cores
    tflops_fp16: float  # dense tensor-core peak (fp32 accumulate)
    bandwidth_gbs: float
    price_usd_hour: float
    price_source: str
    price_date: str
    tflops_fp32: float = 0.0  # non-tensor FP32 peak
    interconnect: str = ""
    aliases: tuple[str, ...] = ()
    typical: bool = False

    def peak_tflops(self, precision: str) -> float:
        """Dense peak for a training precision (``bf16``, ``fp16`` or ``fp32``)."""
        precision = precision.lower()
        if precision == "bf16":
            if self.tflops_bf16 is None:
                raise SpecError(f"{self.display} does not support bf16; use fp16 or fp32")
            return float(self.tflops_bf16)
        if precision == "fp16":
            return float(self.tflops_fp16)
        if precision == "fp32":
            return float(self.tflops_fp32)
        raise SpecError(f"unknown precision {precision!r}; expected bf16, fp16 or fp32")


@lru_cache(maxsize=None)
def _gpus() -> dict[str, GPU]:
    out = {}
    for name, e in _load_yaml("gpus.yaml")["gpus"].items():
        out[name] = GPU(
            name=name,
            display=str(e["display"]),
            memory_gb=float(e["memory_gb"]),
            supports_bf16=bool(e["supports_bf16"]),
            compute_capability=str(e["compute_capability"]),
            tflops_bf16=None if e.get("tflops_bf16") is None else float(e["tflops_bf16"]),
            tflops_fp16=float(e["tflops_fp16"]),
            bandwidth_gbs=float(e["bandwidth_gbs"]),
            price_usd_hour=float(e["price_usd_hour"]),
            price_source=str(e["price_source"]),
            price_date=str(e["price_date"]),
            tflops_fp32=float(e.get("tflops_fp32") or 0.0),
            interconnect=str(e.get("interconnect", "")),
            aliases=tuple(str(a) for a in e.get("aliases") or ()),
            typical=bool(e.get("typical", False)),
        )
    return out


@lru_cache(maxsize=None)
def _gpu_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for name, gpu in _gpus().items():
        for key in (name, *gpu.aliases):
            index.setdefault(_norm_gpu(key), name)
    return index


def list_gpus() -> list[GPU]:
    """Every catalog GPU, sorted by name."""
    return sorted(_gpus().values(), key=lambda g: g.name)


def get_gpu(name: str) -> GPU:
    """A GPU by catalog name or alias, in any letter case (``A100-80GB``, ``h100``)."""
    key = _norm_gpu(str(name))
    found = _gpu_index().get(key)
    if found is None:
        found = _gpu_index().get(key.replace("_", ""))
    if found is None:
        close = difflib.get_close_matches(key, list(_gpu_index()), n=3, cutoff=0.5)
        names = list(dict.fromkeys(_gpu_index()[c] for c in close))
        hint = f" Did you mean {', '.join(names)}?" if names else ""
        raise SpecError(
            f"hardware.gpu_type: unknown GPU type {short_repr(name)}.{hint} Known GPU types: {', '.join(sorted(_gpus()))}."
        )
    return _gpus()[found]


def guess_gpu(vram_gb: float) -> GPU | None:
    """A typical card with about ``vram_gb`` of memory (within 10%), or None.

    Used when a spec gives ``vram_per_gpu`` but no ``gpu_type``: 16 GB -> T4, 24 GB -> A10G,
    32 -> V100 32GB, 40 -> A100 40GB, 48 -> L40S, 80 -> A100 80GB, 141 -> H200.
    """
    if vram_gb is None or vram_gb <= 0:
        return None
    best: tuple[float, str] | None = None
    for gpu in _gpus().values():
        if not gpu.typical:
            continue
        ratio = abs(gpu.memory_gb - vram_gb) / gpu.memory_gb
        if ratio <= 0.10 and (best is None or ratio < best[0]):
            best = (ratio, gpu.name)
    return None if best is None else _gpus()[best[1]]


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelEntry:
    """One catalog model: its config.json facts and chat-template information."""

    id: str
    config: Mapping[str, Any] = field(hash=False)
    chat_template_family: str = "none"
    has_chat_template: bool = False
    published_params: int | None = None
    aliases: tuple[str, ...] = ()

    @property
    def architecture(self) -> Architecture:
        return Architecture.from_config(
            self.config,
            has_chat_template=self.has_chat_template,
            chat_template_family=self.chat_template_family,
        )


@dataclass(frozen=True)
class ResolvedModel:
    """A ``base_model`` resolved to its architecture, and where the facts came from."""

    id: str  # canonical hub id (catalog, hub) or the path as written (local)
    architecture: Architecture
    source: str  # "catalog" | "local" | "hub"
    config: Mapping[str, Any] = field(hash=False, repr=False)
    path: Path | None = None  # the local directory, for source == "local"

    @property
    def has_chat_template(self) -> bool:
        return self.architecture.has_chat_template

    @property
    def chat_template_family(self) -> str:
        return self.architecture.chat_template_family


def _entry_fields(raw: dict[str, Any], key: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    e = raw[key]
    if "base" not in e:
        return {k: v for k, v in e.items() if k != "aliases"}
    base = e["base"]
    if base not in raw or base in seen:
        raise ValueError(f"models.yaml: {key}: bad base {base!r}")
    merged = _entry_fields(raw, base, (*seen, key))
    config = {**merged["config"], **(e.get("config") or {})}
    merged.update({k: v for k, v in e.items() if k not in ("aliases", "base", "config")})
    merged["config"] = config
    return merged


@lru_cache(maxsize=None)
def _models() -> dict[str, ModelEntry]:
    raw = _load_yaml("models.yaml")["models"]
    out = {}
    for key in raw:
        f = _entry_fields(raw, key)
        out[key] = ModelEntry(
            id=key,
            config=dict(f["config"]),
            chat_template_family=str(f.get("chat_template_family", "none")),
            has_chat_template=bool(f.get("has_chat_template", False)),
            published_params=f.get("published_params"),
            aliases=tuple(str(a) for a in raw[key].get("aliases") or ()),
        )
    return out


@lru_cache(maxsize=None)
def _model_index() -> tuple[dict[str, str], dict[str, str]]:
    """(exact name -> id, lower-cased name -> id) over ids and aliases."""
    exact: dict[str, str] = {}
    lower: dict[str, str] = {}
    for mid, entry in _models().items():
        for name in (mid, *entry.aliases):
            exact.setdefault(name, mid)
            lower.setdefault(name.lower(), mid)
    return exact, lower


def list_models() -> list[ModelEntry]:
    """Every catalog model, sorted by id (case-insensitively)."""
    return sorted(_models().values(), key=lambda m: m.id.lower())


def get_model(name: str) -> ModelEntry | None:
    """The catalog entry for an id or alias (any letter case), or None."""
    exact, lower = _model_index()
    mid = exact.get(name) or lower.get(name.lower())
    return None if mid is None else _models()[mid]


def closest_models(name: str, n: int = 3) -> list[str]:
    """The ``n`` catalog ids closest to ``name`` (difflib ratio, case-insensitive)."""
    models = _models()
    candidates = {}
    for mid, entry in models.items():
        for alias in (mid, *entry.aliases):
            candidates.setdefault(alias.lower(), mid)
    # Compare the full name and the part after the organisation, keep the better score.
    query = name.strip().lower()
    short = query.split("/")[-1]
    scored = []
    for cand, mid in candidates.items():
        ratio = max(
            difflib.SequenceMatcher(None, query, cand).ratio(),
            difflib.SequenceMatcher(None, short, cand.split("/")[-1]).ratio(),
        )
        scored.append((-ratio, mid))
    out: list[str] = []
    for _, mid in sorted(scored):
        if mid not in out:
            out.append(mid)
        if len(out) == n:
            break
    return out


# ----------------------------------------------------------------------------- chat templates


def chat_template_family_of(template: str) -> str:
    """Guess the prompt format from a Jinja chat template's text."""
    if "<|im_start|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template:
        return "llama3"
    if "<start_of_turn>" in template:
        return "gemma"
    if "[INST]" in template:
        return "llama2" if "<<SYS>>" in template else "mistral"
    if "<|user|>" in template:
        return "phi3" if "<|end|>" in template else "zephyr"
    return "custom"


def _template_text(value: Any) -> str | None:
    """A tokenizer_config ``chat_template``: a string, or a list of {name, template}."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        texts = [t.get("template", "") for t in value if isinstance(t, dict)]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get("default") or next((t for t in texts if t), None)
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _local_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        text = read_text_file(jinja, "chat template", 4 << 20)  # binary or huge: a clear error
        if text.strip():
            return text
    for name in ("tokenizer_config.json", "chat_template.json"):
        if (folder / name).exists():
            data = read_json_object(folder / name, name)
            text = _template_text(data.get("chat_template"))
            if text:
                return text
    return None


def local_chat_template(folder: Path) -> str | None:
    """A local model folder's chat template text (chat_template.jinja or tokenizer_config.json)."""
    return _local_template(folder)


# Sizes a config.json must hold as positive whole numbers, and the largest we believe.
_SIZE_KEYS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "vocab_size": ("vocab_size",),
}
_OPTIONAL_SIZE_KEYS = (
    "num_key_value_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "n_inner",
    "ffn_hidden_size",
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "num_local_experts",
    "num_experts",
    "num_experts_per_tok",
)
_MAX_SIZE = 1 << 31


def config_problems(config: dict[str, Any]) -> list[str]:
    """What makes a config.json unusable for planning, one message per key."""
    cfg = config
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = cfg["text_config"] if isinstance(cfg["text_config"], dict) else {}
    problems = []

    def check(key: str, value: Any, *, zero_ok: bool) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"config.json: {key} must be a whole number, got {short_repr(value)}")
        elif value < (0 if zero_ok else 1) or value > _MAX_SIZE:
            low = "0" if zero_ok else "1"
            problems.append(
                f"config.json: {key} must be between {low} and {_MAX_SIZE}, got {value}"
            )

    for label, names in _SIZE_KEYS.items():
        present = next((n for n in names if cfg.get(n) is not None), None)
        if present is None:
            problems.append(f"config.json: no {label} (looked for {', '.join(names)})")
        else:
            check(present, cfg[present], zero_ok=False)
    for key in _OPTIONAL_SIZE_KEYS:
        if cfg.get(key) is not None:
            check(key, cfg[key], zero_ok=key.startswith("num_") and "expert" in key)
    if "model_type" in cfg and not isinstance(cfg["model_type"], str):
        problems.append(
            f"config.json: model_type must be a string, got {short_repr(cfg['model_type'])}"
        )
    if not problems:
        heads = cfg.get("num_attention_heads", cfg.get("n_head"))
        kv = cfg.get("num_key_value_heads", cfg.get("num_kv_heads"))
        hidden = next(cfg[n] for n in _SIZE_KEYS["hidden_size"] if cfg.get(n) is not None)
        if kv and heads % kv:
            problems.append(
                f"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            )
        if cfg.get("head_dim") is None and hidden % heads:
            problems.append(
                f"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            )
    return problems


# ----------------------------------------------------------------------------- resolution


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "FINETUNE_GEN_OFFLINE")
    )


def cache_dir() -> Path:
    """Where hub configs are cached: ``$XDG_CACHE_HOME/finetune-gen/configs`` (~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "finetune-gen" / "configs"


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~", "\\")) or os.path.exists(os.path.expanduser(name))


def _not_found(name: str, reason: str) -> SpecError:
    close = closest_models(name)
    return SpecError(
        f"unknown base_model {name!r}: {reason}. Closest catalog models: {', '.join(close)}."
        " To use another model, pass a local folder that contains its config.json (and"
        " tokenizer files) as base_model, e.g. base_model: ./my-model"
    )


def _resolve_local(name: str) -> ResolvedModel:
    folder = Path(os.path.expanduser(name))
    if not folder.exists():
        raise SpecError(f"base_model {name!r} looks like a local path but does not exist")
    if not folder.is_dir():
        raise SpecError(
            f"base_model {name!r} is a file; pass the model's folder (the one with config.json)"
        )
    if not (folder / "config.json").exists():
        raise SpecError(
            f"base_model {name!r} is a local folder with no config.json; a local model folder"
            " needs the config.json that save_pretrained writes"
        )
    config = read_json_object(folder / "config.json", "config.json")
    template = _local_template(folder)
    arch = _architecture(name, config, template)
    return ResolvedModel(id=name, architecture=arch, source="local", config=config, path=folder)


def _architecture(name: str, config: dict[str, Any], template: str | None) -> Architecture:
    problems = config_problems(config)
    if problems:
        raise SpecError(
            f"base_model {short_repr(name)}: its config.json cannot be used", problems=problems
        )
    try:
        return Architecture.from_config(
            config,
            has_chat_template=template is not None,
            chat_template_family=chat_template_family_of(template) if template else "none",
        )
    except (KeyError, TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:
        raise SpecError(f"base_model {name!r}: config.json lacks what is needed ({exc})") from exc


def _hub_get(repo_id: str, filename: str) -> bytes | None:
    """A file from the hub's main branch; None when it does not exist (404)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/{repo_id}/resolve/main/{filename}")
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and filename != "config.json":
            return None
        raise


def _resolve_hub(name: str) -> ResolvedModel | None:
    cache = cache_dir() / (name.replace("/", "--") + ".json")
    cached = _read_json(cache)
    if cached is not None and isinstance(cached.get("config"), dict):
        config, template = cached["config"], cached.get("chat_template")
    elif _offline():
        return None
    else:
        try:
            config = json.loads(_hub_get(name, "config.json") or b"{}")
            template = None
            tok = _hub_get(name, "tokenizer_config.json")
            if tok:
                template = _template_text(json.loads(tok).get("chat_template"))
            if template is None:
                jinja = _hub_get(name, "chat_template.jinja")
                template = jinja.decode("utf-8") if jinja else None
        except urllib.error.HTTPError as exc:
            reason = {
                401: "gated or private on the hub (set HF_TOKEN)",
                403: "access denied by the hub (gated model?)",
                404: "not in the catalog and not found on the hub",
            }
            raise _not_found(name, reason.get(exc.code, f"hub answered HTTP {exc.code}")) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise _not_found(name, f"not in the catalog and the hub is unreachable ({exc})")
        if not isinstance(config, dict):
            raise _not_found(name, "the hub's config.json is not a JSON object")
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps({"config": config, "chat_template": template}, indent=1))
            tmp.replace(cache)
        except OSError:
            pass  # caching is an optimisation
    arch = _architecture(name, config, template)
    return ResolvedModel(id=name, architecture=arch, source="hub", config=config)


def resolve_model(base_model: str) -> ResolvedModel:
    """Resolve a spec's ``base_model``: catalog, then a local folder, then the hub."""
    raw = str(base_model or "")
    name = raw.strip()
    if not name:
        raise SpecError("base_model is empty; give a Hugging Face id or a local folder")
    entry = get_model(name)
    if entry is not None:
        return ResolvedModel(
            id=entry.id,
            architecture=entry.architecture,
            source="catalog",
            config=copy.deepcopy(dict(entry.config)),
        )
    if _looks_like_path(raw):  # a folder's name may begin or end with a space
        return _resolve_local(raw)
    if _looks_like_path(name):
        return _resolve_local(name)
    if not _REPO_ID.match(name):
        raise _not_found(name, "not a Hugging Face id (organisation/name) or a local folder")
    resolved = _resolve_hub(name)
    if resolved is None:
        raise _not_found(name, "not in the catalog, and hub lookups are off (offline mode)")
    return resolved
