"""Chunk-by-chunk formatting (finetune_gen/render/formatting.py) gives black's whole-file output, byte
for byte, and after a spec edit black formats only the chunks that changed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import black
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from finetune_gen.render import formatting
from finetune_gen.render import engine as render
from finetune_gen.errors import FinetuneGenError
from finetune_gen.render.formatting import NotPython, format_source, split_chunks
from finetune_gen.api import generate

GOLDEN_PY = sorted((ROOT / "golden").glob("*/expected/*.py"))
# One cache for the tests that may share it: chunks reused across files and feature sets.
_SHARED_CACHE = tempfile.mkdtemp(prefix="format-chunks-")
SPECS = sorted((ROOT / "golden").glob("*/spec.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))


def whole(source: str) -> str:
    return black.format_str(source, mode=black.Mode())


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "black-cache"


@pytest.fixture
def black_calls(monkeypatch):
    """The inputs black formats, recorded (through formatting.run_black, its only caller)."""
    calls: list[str] = []
    real = formatting.run_black

    def counting(source, mode):
        calls.append(source)
        return real(source, mode)

    monkeypatch.setattr(formatting, "run_black", counting)
    return calls


@pytest.mark.parametrize("path", GOLDEN_PY, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_golden_files_chunked_equal_black(path, black_calls):
    source = path.read_text()
    chunks = split_chunks(source)
    assert chunks is not None and "".join(chunks) == source
    assert len(chunks) > 2  # the chunked path is the one under test
    # A golden file is black's output on the whole rendered file, and black is stable on it.
    assert format_source(source, Path(_SHARED_CACHE)) == source
    # chunk by chunk (those another golden file shares come from the cache), never whole
    assert len(black_calls) <= len(chunks)
    assert all(len(call) < len(source) for call in black_calls)


# --- renders of many plans: the raw template output, before black ---------------------------


# Other methods on some of the specs (each costs black on whole files: a few, spread out).
METHOD_EDITS = {
    "golden/llama-lora-alpaca": ["qlora", "prefix_tuning"],
    "golden/qwen-chat-sharegpt": ["full"],
    "golden/mistral-qlora-2gpu": ["ia3"],
    "examples/qwen-chat-auto": ["loha"],
}


def _variant_specs(tmp_path: Path) -> list[Path]:
    """Every golden and example spec, and some with another method."""
    variants = []
    for spec in SPECS:
        data = yaml.safe_load(spec.read_text())
        local = spec.parent / data["dataset"]["path"]
        if local.exists():
            data["dataset"]["path"] = str(local.resolve())
        name = spec.parent.relative_to(ROOT).as_posix()
        if spec.name != "spec.yaml":
            name = f"examples/{spec.stem}"
        edits = [{}] + [{"method": m} for m in METHOD_EDITS.get(name, [])]
        for index, edit in enumerate(edits):
            variant = dict(data, training_config={**(data.get("training_config") or {}), **edit})
            path = tmp_path / f"{name.replace('/', '-')}-{index}.yaml"
            path.write_text(yaml.safe_dump(variant))
            variants.append(path)
    return variants


@pytest.fixture(scope="module")
def raw_renders(tmp_path_factory):
    """The Python sources the templates render for every variant plan (deduplicated)."""
    tmp_path = tmp_path_factory.mktemp("variants")
    sources: dict[str, str] = {}
    original = render.format_python

    def keep_raw(source: str, name: str) -> str:
        # every train.py; a few of the smaller files (they differ little between plans)
        if name == "train.py" or list(sources.values()).count(name) < 3:
            sources.setdefault(source, name)
        return source

    render.format_python = keep_raw
    try:
        for spec in _variant_specs(tmp_path):
            try:
                generate(spec, out_dir=tmp_path / "out")
            except FinetuneGenError:
                continue  # a variant the planner refuses (nothing fits): not a render
    finally:
        render.format_python = original
    assert len(sources) > 15
    return sources


def test_rendered_sources_chunked_equal_black(raw_renders, cache, black_calls):
    differing = []
    for source, name in raw_renders.items():
        if format_source(source, cache) != whole(source):
            differing.append(name)
    assert not differing
    # the chunked path was taken (more black calls than files) and chunks were shared
    assert (
        len(raw_renders) < len(black_calls) < sum(len(split_chunks(s) or [s]) for s in raw_renders)
    )


# --- edge sources ------------------------------------------------------------------------

SNIPPETS = [
    "x=1\n",
    "import os,sys\n",
    "def f(a,b):\n    return a+b\n",
    "@decorator\ndef g():\n  pass\n",
    "@a.b(1)\n@c\nclass K(object):\n    x=1\n    def m(self): ...\n",
    "# a comment about h\ndef h():\n    pass\n",
    "# a comment, then a blank line\n\ndef i(): pass\n",
    "def stub(): ...\n",
    "class Proto:\n    ...\n",
    'class C:\n    """Doc."""\n',
    "def outer():\n    def inner():\n        return 1\n    return inner\n",
    'TEXT = """\ndef not_a_def():\n\n\n    pass\n# not a comment\n"""\n',
    "def long_call():\n    return some_function_name(*arguments_list_here, **keyword_arguments_here, extra=12345)\n",
    'def fs(): return f"{value!r:>10}"\n',
    'if __name__ == "__main__":\n    main()\n',
    "def w():\n    if (n:=len(a))>1: return n\n",
    "async def co():\n    await thing()\n",
    "try:\n    import x\nexcept ImportError:\n    x=None\n",
    "def t():\n    pass\n    # a trailing comment, indented\n",
    "def t2():\n    pass\n# a trailing comment at the margin\n",
    "def pos(a, /, b): return a\n",
    "if True:\n    def cond(): pass\nelse:\n    def cond(): return 1\n",
    "def trailing(\n    a,\n    b,\n):\n    pass\n",
    'def ann(a: int = 1,*args,**kwargs)->None:\n    """Doc\n\n    def inside a docstring\n    """\n',
    "match command:\n    case [x]:\n        pass\n",
    "with (open('a') as f, open('b') as g):\n    pass\n",
    "print('a', end='')  # trailing comment\n",
    "if True:\n    def s1(): pass\nelse:\n    def s2(): ...\n",
    "try:\n    pass\nexcept E:\n    def s3(): ...\nfinally:\n    y = 2\n",
]
HEADERS = [
    "",
    '"""Module docstring."""\n',
    "from __future__ import annotations\n",
    "#!/usr/bin/env python\n",
]


@settings(max_examples=80, deadline=None)
@given(
    header=st.sampled_from(HEADERS),
    parts=st.lists(
        st.tuples(st.sampled_from(SNIPPETS), st.integers(min_value=0, max_value=3)),
        min_size=1,
        max_size=8,
    ),
)
def test_edge_sources_chunked_equal_black(header, parts):
    source = header + "".join("\n" * blank + snippet for snippet, blank in parts)
    assert format_source(source, Path(_SHARED_CACHE)) == whole(source)


@pytest.mark.parametrize(
    "source",
    [
        "x = 1\n",  # no definitions at all
        '"""Docstring."""\ndef f():\n    pass\ndef g():\n    pass\n',
        '"""Docstring."""\n@decorator\ndef f():\n    pass\n',
        "def stub(): ...\ndef f(): pass\n",  # black keeps stubs together
        "# comment\ndef f():\n    pass\n# comment\ndef g():\n    pass\n",
        "import os\ndef f():\n    pass\n\n\n\n\nclass A:\n    pass\nif __name__ == '__main__':\n    f()\n",
        "class A:\n    def m(self): ...\ndef f(): pass\n",
        "class A:\n    def m(self): ...\n    x = 1\ndef f(): pass\n",
        "if x:\n    def f(): pass\nelse:\n    def g(): ...\ndef h(): pass\n",  # a stub last
        "try:\n    pass\nexcept E:\n    def g(): ...\ndef h(): pass\n",
        "match a:\n    case 1:\n        def g(): ...\ndef h(): pass\n",
        "x = 1  # fmt: skip\ndef f():\n  pass\n",
        "\n\n\ndef f():\n  pass\ndef g():\n  pass",  # leading blank lines, no final newline
        "def f():\n    return 1\r\ndef g():\n    return 2\n",  # mixed line ends
    ],
)
def test_structures_with_their_own_blank_line_rules(source, cache):
    assert format_source(source, cache) == whole(source)


def test_target_versions_come_from_the_whole_file(cache):
    """An f-string in one chunk makes black add a trailing comma after **kwargs in another
    (a trailing comma there needs Python 3.5+): chunks cannot infer their versions alone."""
    call = (
        "def b():\n    return some_function_name(*arguments_list_that_is_quite_long_indeed,"
        " **keyword_arguments_that_are_also_rather_long)\n"
    )
    with_fstring = 'def a():\n    return f"{x}"\n\n\n' + call
    assert "rather_long,\n" in whole(with_fstring)
    assert "rather_long\n" in whole(call)
    assert format_source(with_fstring, cache) == whole(with_fstring)
    assert format_source(call, cache) == whole(call)


def test_no_warning_of_python_s_own_parser(cache, recwarn):
    source = 'def f():\n    return re.match("\\d+", x)\n\n\ndef g():\n    pass\n'
    assert format_source(source, cache) == whole(source)
    assert not [w for w in recwarn if "escape" in str(w.message)]


def test_invalid_source_still_reported_by_black(cache):
    with pytest.raises(NotPython, match="cannot parse"):
        format_source("def f(:\n    pass\ndef g():\n    pass\n", cache)


# --- a spec edit: only the changed chunks are formatted -----------------------------------


def test_spec_edit_formats_only_changed_chunks(tmp_path, monkeypatch, black_calls):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FINETUNE_GEN_NO_CACHE", raising=False)
    example = ROOT / "examples" / "llama-lora-alpaca.yaml"
    data = yaml.safe_load(example.read_text())
    data["dataset"]["path"] = str((example.parent / data["dataset"]["path"]).resolve())
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    first = generate(spec, out_dir=tmp_path / "out").files
    assert black_calls  # a cold cache: every chunk formatted once

    black_calls.clear()
    data["training_config"]["learning_rate"] = 1.234e-5
    spec.write_text(yaml.safe_dump(data))
    edited = generate(spec, out_dir=tmp_path / "out").files
    assert "1.234e-05" in edited["train.py"] and edited["train.py"] != first["train.py"]
    assert edited["eval.py"] == first["eval.py"]
    # train.py's unchanged chunks came from the cache: a few small chunks went through black
    assert 1 <= len(black_calls) <= 3, [c[:80] for c in black_calls]
    assert all(len(c) < len(edited["train.py"]) / 10 for c in black_calls)

    monkeypatch.setenv("FINETUNE_GEN_NO_CACHE", "1")  # black on every whole file
    assert generate(spec, out_dir=tmp_path / "out").files == edited
