"""How much code a reader reads to read an implementation: its server and client modules
and every module of an implementation package they import, in lines that hold code (not
blank, not only a comment, not part of a docstring)."""

from __future__ import annotations

import ast
import importlib.util
import io
import token
import tokenize

__all__ = ["implementation_modules", "lines_of_code"]

#: Packages whose modules count as an implementation's code (a reader reads them).
_IMPL_SUFFIX = "_impl"


def implementation_modules(start: list[str]) -> list[str]:
    """``start`` and every module of an implementation package (``*_impl``) they import,
    directly or not: the code a reader of that implementation reads."""
    found: list[str] = []
    todo = list(start)
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        found.append(name)
        with open(spec.origin, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        package = name if spec.submodule_search_locations else name.rpartition(".")[0]
        todo += [m for m in _imports(tree, package) if _is_implementation(m)]
    return found


def _imports(tree: ast.Module, package: str) -> list[str]:
    """Modules an AST imports, absolute names (``from x import y`` may name module x.y)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def _is_implementation(module: str) -> bool:
    """Whether ``module`` is a module (not a name inside one) of an implementation package."""
    if not any(part.endswith(_IMPL_SUFFIX) for part in module.split(".")):
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # "package.module.NAME": a name, not a module
        return False


def lines_of_code(modules: list[str]) -> int:
    """Lines of ``modules`` with code on them: not blank, not only a comment, not part of a
    docstring, read with :mod:`tokenize` (so a string or bracket spanning lines counts each
    line it covers)."""
    total = 0
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        with open(spec.origin, encoding="utf-8") as source:
            total += _code_lines(source.read())
    return total


_NOT_CODE = {
    token.COMMENT,
    token.NL,
    token.NEWLINE,
    token.INDENT,
    token.DEDENT,
    token.ENCODING,
    token.ENDMARKER,
}


def _code_lines(text: str) -> int:
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in _NOT_CODE:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)
