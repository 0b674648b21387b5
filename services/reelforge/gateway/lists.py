"""Cursor pagination shared by the listing routes: the query parameters and the OpenAI list object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Query


@dataclass(frozen=True)
class Page:
    after: str | None  # the last id of the previous page
    limit: int
    order: Literal["asc", "desc"]


def _page(after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20,
          order: Literal["asc", "desc"] = "desc") -> Page:
    return Page(after, limit, order)


PageDep = Annotated[Page, Depends(_page)]


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
