"""``python -m airflow_provider_shardmigrate.cli`` runs the ``shardmigrate`` command."""

import sys

from airflow_provider_shardmigrate.cli import main

sys.exit(main())
