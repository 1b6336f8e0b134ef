"""CONVENTIONS.md, checked where a check is exact rather than a judgement."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from herald.dispatch.v1 import dispatch_pb2
from herald.ingest.v1 import ingest_pb2
from herald.reconcile.v1 import reconcile_pb2
from herald.webhooks.v1 import webhooks_pb2

SRC = Path(__file__).parents[2] / "src" / "herald"
# A Python string that is a SQL statement: SQL lives in the .sql files (queries and
# migrations), where it is read, reviewed and tested as SQL. devenv drives psql for the
# local PostgreSQL and is no service.
_STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|WITH|TRUNCATE|BEGIN|COMMIT|ROLLBACK)\b"
)


def test_no_sql_is_written_inline_in_python() -> None:
    inline = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in sorted(SRC.rglob("*.py"))
        if "devenv" not in path.relative_to(SRC).parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _STATEMENT.match(node.value)
    ]
    assert inline == []


def _public(body: list[ast.stmt]) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    return [
        node
        for node in body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not node.name.startswith("_")
    ]


def test_every_public_function_class_and_rpc_has_a_docstring() -> None:
    """Module-level functions and classes, and each RPC of a servicer (what the API
    answers is read there first)."""
    undocumented = []
    for path in sorted(SRC.rglob("*.py")):
        for node in _public(ast.parse(path.read_text()).body):
            named = [node]
            if isinstance(node, ast.ClassDef) and node.name.endswith("Servicer"):
                named += _public(node.body)
            undocumented += [
                f"{path.relative_to(SRC)}:{n.lineno} {n.name}"
                for n in named
                if ast.get_docstring(n) is None
            ]
    assert undocumented == []


def test_every_herald_rpc_is_unary() -> None:
    """The API-key check, the error mapping and the request-size answers wrap unary
    calls only (runtime/interceptors.py UnaryInterceptor): a streaming method would be
    answered without a key. Add one only with interceptors that cover it."""
    methods = [
        method
        for module in (ingest_pb2, dispatch_pb2, webhooks_pb2, reconcile_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert len(methods) > 20, "every Herald service's methods were looked at"
    streaming = [m.full_name for m in methods if m.client_streaming or m.server_streaming]
    assert streaming == []
