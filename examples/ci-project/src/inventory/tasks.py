"""Tasks of the project: run in containers in production, in-process in some tests."""

from __future__ import annotations

from dockertask import Secret, current_context, task

from . import Item, value_cents


@task(secret_requests=[Secret("shop", "api_token")])
def report(items: list[Item]) -> str:
    token = current_context().secrets.get("shop", "api_token")
    return f"{len(items)} skus worth {value_cents(items)} cents (token {token[:3]}...)"
