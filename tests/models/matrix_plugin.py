"""pytest plugin: after a run that ran the family matrix (tests/models/test_family_matrix.py), print the table
family x capability with each cell's outcome (pass / FAIL / xfail / n/a / not yet, with the reasons)."""
from tests.models import matrix

_MATRIX_TEST = "tests/models/test_family_matrix.py::test_cell["
_outcomes = {}   # (row, capability) -> "pass" | "FAIL" | "xfail" | "XPASS"
_nodes = {}      # test node id (without parameters) -> "pass" | "FAIL" over its items


def pytest_runtest_logreport(report):
    nodeid = report.nodeid
    failed = report.failed
    if report.when != "call" and not failed:
        if not (report.when == "setup" and report.skipped):
            return
    if nodeid.startswith(_MATRIX_TEST):
        key = tuple(nodeid[len(_MATRIX_TEST):-1].rsplit("-", 1))
        if hasattr(report, "wasxfail"):
            outcome = "XPASS" if report.passed else "xfail"
        else:
            outcome = "FAIL" if failed else "skip" if report.skipped else "pass"
        _outcomes[key] = outcome
        return
    base = nodeid.split("[", 1)[0]
    if failed or _nodes.get(base) != "FAIL":
        _nodes[base] = "FAIL" if failed else "skip" if report.skipped else "pass"


def _node_outcome(cell):
    ran = [_nodes[n] for n in cell.nodes if n in _nodes]
    if not ran:
        return "covered"  # by existing tests, not run in this session
    return "FAIL" if "FAIL" in ran else "pass"


def cell_outcome(row, capability):
    """(short text for the table, reason or None)."""
    cell = row.cell(capability)
    if cell.kind == "na":
        return "n/a", cell.detail
    if cell.kind == "pending":
        return "not yet", cell.detail
    ran = _outcomes.get((row.name, capability))
    if ran is None:
        return "not run", None
    if cell.kind == "nodes":
        return f"{_node_outcome(cell)}", "; ".join(cell.nodes)
    if ran == "xfail":
        return "xfail", cell.xfail
    return ran, None


def pytest_terminal_summary(terminalreporter):
    if not _outcomes:
        return
    write = terminalreporter.write_line
    terminalreporter.section("family x capability matrix (tests/models/matrix.py)")
    head = ["row"] + list(matrix.CAPABILITIES)
    table, notes = [], {}  # (outcome, reason) -> footnote number (cells with the same reason share one)
    for row in matrix.ROWS.values():
        line = [row.name]
        for capability in matrix.CAPABILITIES:
            text, reason = cell_outcome(row, capability)
            if reason:
                number = notes.setdefault((text, reason), len(notes) + 1)
                text += f" [{number}]"
            line.append(text)
        table.append(line)
    widths = [max(len(str(r[i])) for r in [head] + table) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths]] + table:
        write("  ".join(str(text).ljust(width) for text, width in zip(line, widths)))
    write("")
    for (text, reason), number in notes.items():
        write(f"[{number}] {text}: {reason}")
