"""The REVERIE pipeline library: the logic every stage and flow uses (layers: tests/test_layers.py)."""
