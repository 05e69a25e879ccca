"""What a store keeps that was made from a sweep's trials: fits, exports and checks (`Outputs`, a part of `Store`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from mutransfer.storage.models import Check, ExportRow, FitRow, Sweep, to_json
from mutransfer.storage.records import CheckInfo, ExportInfo

T = TypeVar("T")


class Outputs:
    """Fits, exports and checks. `Store` provides the transactions (`_run`) and the sweep lookup (`_sweep_row`)."""

    def _run(self, what: str, fn: Callable[[Session], T], *, write: bool = True) -> T:
        raise NotImplementedError

    @staticmethod
    def _sweep_row(s: Session, sweep_id: int) -> Sweep:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- fits, exports

    def save_fit(self, sweep_id: int, result: Mapping[str, Any]) -> int:
        text = to_json(dict(result), "fit result")

        def fn(s: Session) -> int:
            self._sweep_row(s, sweep_id)
            row = FitRow(sweep_id=sweep_id, result_json=text)
            s.add(row)
            s.flush()
            return int(row.id)

        return self._run("save fit", fn)

    def latest_fit(self, sweep_id: int) -> tuple[int, dict[str, Any]] | None:
        def fn(s: Session) -> tuple[int, str] | None:
            row = s.execute(
                select(FitRow.id, FitRow.result_json).where(FitRow.sweep_id == sweep_id).order_by(FitRow.id.desc())
                .limit(1)
            ).first()
            return None if row is None else (int(row[0]), row[1])

        found = self._run("read fit", fn, write=False)
        return None if found is None else (found[0], json.loads(found[1]))

    def save_export(self, sweep_id: int, fit_id: int | None, format: str, content: str) -> int:
        def fn(s: Session) -> int:
            self._sweep_row(s, sweep_id)
            row = ExportRow(sweep_id=sweep_id, fit_id=fit_id, format=format, content=content)
            s.add(row)
            s.flush()
            return int(row.id)

        return self._run("save export", fn)

    def exports(self, sweep_id: int) -> list[ExportInfo]:
        """The sweep's exports, oldest first."""

        def fn(s: Session) -> list[ExportInfo]:
            rows = s.scalars(select(ExportRow).where(ExportRow.sweep_id == sweep_id).order_by(ExportRow.id)).all()
            return [ExportInfo(id=r.id, sweep_id=r.sweep_id, fit_id=r.fit_id, format=r.format, content=r.content,
                               created_at=r.created_at) for r in rows]

        return self._run("read exports", fn, write=False)

    # ----------------------------------------------------------------------------------- checks

    def save_check(self, sweep_id: int | None, kind: str, parametrization: str, passed: bool, summary: str,
                   result: Mapping[str, Any]) -> int:
        """Store a check's outcome (with a sweep, or on its own when `sweep_id` is None); returns its id."""
        text = to_json(dict(result), f"{kind} check result")

        def fn(s: Session) -> int:
            if sweep_id is not None:
                self._sweep_row(s, sweep_id)
            row = Check(sweep_id=sweep_id, kind=kind, parametrization=parametrization, passed=bool(passed),
                        summary=summary, result_json=text)
            s.add(row)
            s.flush()
            return int(row.id)

        return self._run("save check", fn)

    def checks(self, sweep_id: int | None, kind: str | None = None) -> list[CheckInfo]:
        """The checks stored with a sweep (None: those stored without one), oldest first; optionally one kind."""

        def fn(s: Session) -> list[CheckInfo]:
            q = select(Check).where(Check.sweep_id.is_(None) if sweep_id is None else Check.sweep_id == sweep_id)
            if kind is not None:
                q = q.where(Check.kind == kind)
            rows = s.scalars(q.order_by(Check.id)).all()
            return [CheckInfo(id=r.id, sweep_id=r.sweep_id, kind=r.kind, parametrization=r.parametrization,
                              passed=bool(r.passed), summary=r.summary, result=json.loads(r.result_json or "{}"),
                              created_at=r.created_at) for r in rows]

        return self._run("read checks", fn, write=False)



__all__ = ["Outputs"]
