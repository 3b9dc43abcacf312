"""The fault matrix's cells: for one upstream, each fault queued on its list request (and
on its detail or history request), with what its answer asks to wait."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proof.upstreams import TIMEOUT, Upstream


@dataclass
class Cell:
    name: str
    path: str  # where the fault is queued (a Fault path)
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    wait: float = 0.0  # seconds its answer asks to wait (0: it names no time)
    date_in: int = 0  # a Retry-After HTTP-date this many whole seconds ahead
    shift: str = ""  # "inserted" or "deleted": the pages shift between page 1 and page 2


Garble = Callable[[list[dict[str, Any]]], Any]


def _garble(up: Upstream, change: Garble, records: str | None = "") -> Callable[[Any], Any]:
    """A rewrite of the answer's records (the list of them, wherever the answer holds it:
    under ``records``, by default the upstream's item records' key)."""
    key = up.records if records == "" else records

    def fn(data: Any) -> Any:
        found = data if key is None else data.get(key)
        if not isinstance(found, list):
            return data
        new = change([dict(r) for r in found if isinstance(r, dict)])
        return new if key is None else {**data, key: new}

    return fn


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def cells(up: Upstream) -> list[Cell]:
    lst, items, key, when = up.list_path, up.items_path, up.id_key, up.time_key
    slow = {"seconds": TIMEOUT + 1.5}
    ra = {"status": 429, "headers": {"Retry-After": "3"}}
    found = [
        Cell("timeout", lst, "latency", slow),
        Cell("reset mid-body", lst, "reset"),
        Cell("5xx HTML proxy page", lst, "html", {"status": 502}),
        Cell("5xx own JSON error", lst, "status", {"status": 500}),
        Cell("429 Retry-After 3 s", lst, "status", ra, wait=3.0),
        Cell("429 Retry-After HTTP-date", lst, "status", {"status": 429}, date_in=3),
        *(Cell(name, lst, kind, params, wait=wait) for name, kind, params, wait in up.own_rate),
        Cell("truncated JSON", lst, "truncated"),
        Cell("HTML page with 200", lst, "html", {"status": 200}),
        Cell("empty body 200", lst, "empty"),
        Cell("empty body 204", lst, "empty", {"status": 204}),
        Cell("id as object", items, "rewrite",
             {"fn": _garble(up, lambda rs: [{**r, key: {"id": r.get(key)}} for r in rs])}),
        Cell("object where list", items, "rewrite",
             {"fn": _garble(up, lambda rs: {"0": rs[0]} if rs else {})}),
        Cell("created_at garbage", items, "rewrite",
             {"fn": _garble(up, lambda rs: [{**r, when: "yesterday-ish"} for r in rs])}),
        Cell("missing ids", items, "rewrite",
             {"fn": _garble(up, lambda rs: [_without(r, key) for r in rs])}),
        Cell("duplicate ids in one page", items, "rewrite",
             {"fn": _garble(up, lambda rs: rs + rs)}),
    ]  # fmt: skip
    if up.list_records:  # the list is not the items' records (Rocket.Chat's rooms)
        rid, rooms = up.list_id, up.list_records
        found += [
            Cell(f"list: {rid} as object", lst, "rewrite",
                 {"fn": _garble(up, lambda rs: [{**r, rid: {"id": r.get(rid)}} for r in rs],
                                rooms)}),
            Cell(f"list: missing {rid}", lst, "rewrite",
                 {"fn": _garble(up, lambda rs: [_without(r, rid) for r in rs], rooms)}),
        ]  # fmt: skip
    if up.next_path:
        nxt, what = up.next_path, "detail" if up.next_path != up.items_path else "history"
        found += [
            Cell(f"{what}: timeout", nxt, "latency", slow),
            Cell(f"{what}: reset mid-body", nxt, "reset"),
            Cell(f"{what}: 5xx own JSON error", nxt, "status", {"status": 500}),
            Cell(f"{what}: 429 Retry-After 3 s", nxt, "status", ra, wait=3.0),
            Cell(f"{what}: truncated JSON", nxt, "truncated"),
            Cell(f"{what}: HTML page with 200", nxt, "html", {"status": 200}),
            Cell(f"{what}: empty body 200", nxt, "empty"),
        ]
        if what == "detail":
            found.append(Cell("detail: list where object", nxt, "rewrite", {"fn": lambda d: [d]}))
    if up.page:
        found += [Cell(f"pages shift: {how}", items, "before", shift=how)
                  for how in ("inserted", "deleted")]  # fmt: skip
    return found
