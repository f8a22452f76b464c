"""docs/bad-input.md's table is the one rendered from the cases, and every case's tests exist."""

from __future__ import annotations

import ast

from tests.bad_input import CASES, DOC, REPO, doc_with_table


def test_doc_table_is_rendered_from_the_cases():
    doc = DOC.read_text()
    assert doc == doc_with_table(doc), "docs/bad-input.md is stale: run scripts/bad-input-table --write"


def test_every_case_names_tests_that_exist():
    missing = []
    for case in CASES:
        for test in case.tests:
            path, name = test.split("::")
            tree = ast.parse((REPO / path).read_text())
            names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            if name not in names:
                missing.append(test)
    assert not missing, missing
