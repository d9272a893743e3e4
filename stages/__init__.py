"""One thin entry point per DVC stage (`python -m stages.<name>`); dvc.yaml runs them."""
