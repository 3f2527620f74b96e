"""DAG builders: migration rollouts, manual rollbacks, the drift DAG, and the folder loader."""
