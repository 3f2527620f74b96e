"""A human's answer to a canary approval (``canary_approval: true``), as the approval task records it.

The approval task (operators/approval.py, Airflow's HITL approval) writes one :class:`ApprovalDecision` as its
``return_value``; the report passes it to core/outcomes.py, which says why the rest of the fleet did not start
when the answer was not an approval. Pure: no Airflow, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_COMMENT = 500


@dataclass(frozen=True)
class ApprovalDecision:
    """What came of a canary approval.

    ``by`` is the approver's name, None when nobody answered; ``timed_out`` means the answer is the default
    (reject) applied once ``timeout_s`` passed without one.
    """

    approved: bool
    by: str | None = None
    comment: str = ""
    timed_out: bool = False
    timeout_s: float = 0.0
    responded_at: str | None = None

    def to_xcom(self) -> dict[str, Any]:
        return {
            "approved": self.approved,
            "by": self.by,
            "comment": self.comment[:MAX_COMMENT],
            "timed_out": self.timed_out,
            "timeout_s": self.timeout_s,
            "responded_at": self.responded_at,
        }

    @classmethod
    def from_xcom(cls, data: Any) -> ApprovalDecision | None:
        """The decision an approval task pushed, or None for anything else (no answer recorded yet)."""
        if not isinstance(data, Mapping) or "approved" not in data:
            return None
        return cls(
            approved=bool(data["approved"]),
            by=str(data["by"]) if data.get("by") else None,
            comment=str(data.get("comment") or ""),
            timed_out=bool(data.get("timed_out")),
            timeout_s=float(data.get("timeout_s") or 0.0),
            responded_at=str(data["responded_at"]) if data.get("responded_at") else None,
        )
