"""Prefect flows: the pipeline over DVC, the generation fan-out, the scheduled deployment."""
