"""docs/architecture.md names files, modules and code; each must exist, so the page cannot outlive a rename.

Checked, read from the page's text:
- every path under the package (`src/mindformers_hf/...`, `mindformers_hf/...`) and every repo path
  (`tests/...`, `docs/...`, `benchmarks/...`) exists (template paths with `<family>` are skipped);
- every dotted module path (`mindformers_hf.a.b`) is a module or package, or a name defined in one;
- every other backticked code span starting with an identifier (`fill_parameters`, `StaticRunner.prefill`,
  `compiled_layers(model, "prefill")`) names something the source defines: a function, class, assigned name
  or attribute, parameter or keyword, or a string constant (environment variables, style names).
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "mindformers_hf"
PAGES = [ROOT / "docs" / "architecture.md"]

_PATH = re.compile(r"(?<![\w./-])((?:src/)?mindformers_hf/[\w./<>-]*|(?:tests|docs|benchmarks)/[\w./<>-]+)")
_CODE = re.compile(r"`([^`\n]+)`")
_LEADING = re.compile(r"@?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


def defined_names():
    """Every name the package's source defines or spells (see the module docstring)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.rpartition(".")[2])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                names.add(node.value)
    return names


def _module_defines(path, name):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.rpartition(".")[2]) == name for a in node.names):
                return True
    return False


def _module_path_problem(dotted):
    """None when `mindformers_hf.a.b[.name]` is a module or package (or a name one defines), else the problem."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = SRC.joinpath(*parts[:cut])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                rest = parts[cut:]
                if not rest or _module_defines(candidate, rest[0]):
                    return None
                return f"{dotted}: {candidate.relative_to(SRC)} defines no {rest[0]!r}"
    return f"{dotted}: no such module"


def _somewhere(relative):
    """A short path (`decoder_layer.py`, `llama/`, `ops/csrc/`, `src/`) names a file or folder of the repo, of
    src/, or at the end of a path in the package."""
    if (ROOT / relative).exists() or (SRC / relative).exists():
        return True
    return any(f"/{p.relative_to(PACKAGE).as_posix()}/".endswith(f"/{relative}/") for p in PACKAGE.rglob("*"))


def problems(text, names=None):
    """What on the page names something that does not exist."""
    names = defined_names() if names is None else names
    found = []
    for match in _PATH.finditer(text):
        path = match.group(1).rstrip(".,;:)")
        if "<" in path:
            continue
        where = SRC / path.removeprefix("src/") if "mindformers_hf/" in path else ROOT / path
        if not where.exists():
            found.append(f"path {path}: does not exist")
    for span in _CODE.findall(text):
        if "/" in span or span.endswith(".py"):
            if _PATH.fullmatch(span) is None and "<" not in span and not _somewhere(span.rstrip("/")):
                found.append(f"`{span}`: no file or folder of that name in src/mindformers_hf")
            continue  # a full path: checked above
        lead = _LEADING.match(span)
        if lead is None:
            continue
        dotted = lead.group(1)
        if dotted.startswith("mindformers_hf"):
            problem = _module_path_problem(dotted)
            if problem:
                found.append(problem)
        else:
            found += [f"`{span}`: {part!r} is defined nowhere in src/mindformers_hf"
                      for part in dotted.split(".") if part not in names]
    return found


@pytest.fixture(scope="module")
def names():
    return defined_names()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_and_name_on_the_page_exists(page, names):
    assert not problems(page.read_text(encoding="utf-8"), names)


def test_the_checker_reports_what_is_gone(names):
    """Names of files, modules and code that issue 18 removed are reported, one problem each."""
    text = ("`mindformers_hf/models/llama/compiled_layer.py`, src/mindformers_hf/parallel/loading.py, "
            "`mindformers_hf.models.llama.modeling_llama.DECODER_VARIANTS`, `mindformers_hf.nope`, "
            "`MOE_VARIANTS`, `LlamaModel.compile_layers`, tests/test_nothing_here.py, `compiled_layers(model)`, "
            "`compiled_layer.py`, `llama/`, `decoder_layer.py`")
    assert problems(text, names) == [
        "path mindformers_hf/models/llama/compiled_layer.py: does not exist",
        "path tests/test_nothing_here.py: does not exist",
        "mindformers_hf.models.llama.modeling_llama.DECODER_VARIANTS: mindformers_hf/models/llama/modeling_llama.py "
        "defines no 'DECODER_VARIANTS'",
        "mindformers_hf.nope: mindformers_hf/__init__.py defines no 'nope'",
        "`MOE_VARIANTS`: 'MOE_VARIANTS' is defined nowhere in src/mindformers_hf",
        "`LlamaModel.compile_layers`: 'compile_layers' is defined nowhere in src/mindformers_hf",
        "`compiled_layer.py`: no file or folder of that name in src/mindformers_hf",
    ]
