"""The only task of a stand-in DAG for a broken migration folder: it fails with the folder's error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class InvalidMigrationOperator(BaseOperator):
    """Fail with the validation error of a migration that could not be built.

    :param message: The error, with its code, file and field.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#f8c0c0"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(self.message)
