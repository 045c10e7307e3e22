"""Apply a tensor-parallel plan to a built model from outside the model file (torchtitan style).

The modules declare their layout as data, next to their code (HF's `_tp_plan` / `base_model_tp_plan` shape):
- `_tp_plan` (class attribute): {child name: style} or {child name: (style, unit, unit, ...)}, the style a name
  in parallel/styles.py's registry and the units naming, in order, the row blocks of that child's weight
  (a fused qkv_proj: query heads, then key heads, then value heads);
- `tp_units` (instance attribute, set in the constructor): {unit: (count, rows per unit, shared)} for the full
  model: the counts the split divides (shared: fewer units than ranks may be replicated, GQA's KV heads). A unit
  may be named `field:tag` to give the same count another width (DeepSeek's heads: qk_head_dim rows of q_proj,
  nope + v rows of kv_b_proj, v_head_dim columns of o_proj); errors name the config field before the colon.
An entry may name one of the module's own parameters rather than a child (gpt-oss's per-head `sinks`): it is
split in place by styles.PARAMETER_STYLES.
`tp_plan="auto"` is every declaration in the model (the causal-LM class declares `{"lm_head":
"colwise_gather_output"}` as HF's does); a dict plan ({pattern: style}, keys relative to the model, `*` for one
name) picks the cells and styles, the parent's declaration still gives the blocks. Matching cells are replaced
one-for-one by the registry's parallel layers; the modules read their per-rank sizes from their weights' shapes,
so nothing else of the model changes. This package imports no model family.
"""
import re

from .styles import HF_STYLE_ALIASES, PARALLEL_STYLES, PARAMETER_STYLES, Block


def declared_plan(model):
    """{full cell name: style} from every `_tp_plan` declared by the model's modules (and the model itself)."""
    plan = {}
    for name, cell in model.cells_and_names():
        for leaf, entry in (getattr(cell, "_tp_plan", None) or {}).items():
            if getattr(cell, leaf, None) is not None:
                plan[f"{name}.{leaf}" if name else leaf] = entry if isinstance(entry, str) else entry[0]
    return plan


def resolve_tp_plan(model, tp_plan):
    """tp_plan="auto" -> the modules' declarations; a dict is taken as given (keys relative to the model passed
    to from_pretrained, styles HF's or ours)."""
    if isinstance(tp_plan, dict):
        return dict(tp_plan)
    if tp_plan != "auto":
        raise ValueError(f"tp_plan={tp_plan!r}: use 'auto' (the layouts the model's modules declare) or a dict of "
                         "{module pattern: style}")
    plan = declared_plan(model)
    if not any(style != "colwise_gather_output" for style in plan.values()):
        raise NotImplementedError(f"tensor parallelism: {type(model).__name__} declares no tensor-parallel layout "
                                  "(`_tp_plan` on its modules); pass tp_plan as a dict")
    return plan


def _style(key, style, leaf, declared):
    """HF's plan values onto the registry's names; None = leave the cell replicated."""
    if style == "colwise_gather_output" and declared is not None and len(declared) > 2:
        style = "colwise"  # HF replicates a fused qkv/gate_up output (Phi3); ours splits it per block
    style = HF_STYLE_ALIASES.get(style, style)
    if style is not None and style not in PARALLEL_STYLES:
        raise NotImplementedError(f"tensor parallel style {style!r} (for {key!r}) is not supported; supported: "
                                  f"{', '.join(sorted(PARALLEL_STYLES))}")
    return style


def _blocks(parent, leaf):
    """The row blocks `parent` declares for its child `leaf`, or (None, None) when it declares none."""
    entry = (getattr(parent, "_tp_plan", None) or {}).get(leaf)
    if entry is None or isinstance(entry, str) or len(entry) == 1:
        return entry, None
    units = getattr(parent, "tp_units", {})
    return entry, [Block(name.partition(":")[0], *units[name]) for name in entry[1:]]


def apply_tensor_parallel(model, mesh, plan):
    """Replace the plan's cells in `model` by this rank's parallel layers; returns the replaced names. Every
    replacement is built (and every size checked) before the first one is swapped in."""
    if getattr(model, "tp_mesh", None) is not None:
        raise ValueError(f"{type(model).__name__} is already split for tensor parallelism")
    patterns = []
    for key, style in plan.items():
        patterns.append((key, re.compile(re.escape(key).replace(r"\*", r"[^.]+")), style))
    cells = dict(model.cells_and_names())
    swaps = []
    for name, cell in cells.items():
        match = next(((key, style) for key, pattern, style in patterns if pattern.fullmatch(name)), None)
        if match is None:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = cells[parent_name] if parent_name else model
        entry, blocks = _blocks(parent, leaf)
        style = _style(match[0], match[1], leaf, entry if not isinstance(entry, str) else None)
        if style is not None:
            swaps.append((parent, leaf, name, PARALLEL_STYLES[style](cell, blocks, mesh)))
    params = []  # a cell's own parameters named by the plan (gpt-oss's sinks), split in place
    for name, cell in cells.items():
        for attr, param in cell._params.items():
            full = f"{name}.{attr}" if name else attr
            match = next(((key, style) for key, pattern, style in patterns if pattern.fullmatch(full)), None)
            if param is None or match is None:
                continue
            style = HF_STYLE_ALIASES.get(match[1], match[1])
            if style is not None and style not in PARAMETER_STYLES:
                raise NotImplementedError(f"tensor parallel style {match[1]!r} for the parameter {full!r} is not "
                                          f"supported; parameters take: {', '.join(sorted(PARAMETER_STYLES))}")
            if style is not None:
                params.append((cell, attr, full, *PARAMETER_STYLES[style](param, _blocks(cell, attr)[1], mesh)))
    for key, _, style in patterns:  # an unknown style is refused even where its pattern matched nothing
        _style(key, style, None, None)
    if not swaps and not params:
        raise ValueError(f"tp_plan matched no module of {type(model).__name__}: {sorted(plan)}")
    for parent, leaf, _, replacement in swaps:
        setattr(parent, leaf, replacement)
    for cell, attr, _, param, owner in params:
        setattr(cell, attr, param)
        cell.tp_parameters = {**(getattr(cell, "tp_parameters", None) or {}), attr: owner}
    model.tp_mesh = mesh  # save_pretrained refuses a sharded model; generate and tests read the rank
    return [name for _, _, name, _ in swaps] + [name for _, _, name, _, _ in params]
