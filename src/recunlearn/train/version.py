"""The code version that every cached artefact's key carries, so that a code change never reuses a stale
model, encoder or retrain (evaluation.md, rule 7).

It is the package version plus a fingerprint of the code that produces the artefact: the syntax trees of
the subpackages it depends on, with docstrings removed. A trained model depends on `data`, `models` and
`train`; an unlearner's prepared state on `unlearn` too. Editing a comment or a docstring keeps cached
entries; changing what the code does invalidates them.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from .. import __version__

TRAINING_PACKAGES = ("data", "models", "train")
UNLEARNING_PACKAGES = (*TRAINING_PACKAGES, "unlearn")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def fingerprint_sources(root: Path, packages: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            digest.update(str(file.relative_to(root)).encode())
            digest.update(ast.dump(_without_docstrings(ast.parse(file.read_text(encoding="utf-8")))).encode())
    return digest.hexdigest()[:12]


@functools.cache
def code_version(packages: tuple[str, ...] = UNLEARNING_PACKAGES) -> str:
    """`<package version>+<fingerprint of packages>`, e.g. `0.1.0+3fa85f64a1b2`."""
    return f"{__version__}+{fingerprint_sources(Path(__file__).resolve().parents[1], packages)}"
