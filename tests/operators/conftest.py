"""The dag.test() runner of tests/dags, for operator tests that run a real DAG."""

from tests.dags.conftest import dag_runner

__all__ = ["dag_runner"]
