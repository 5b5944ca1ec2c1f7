"""Synthetic clips with known timestamps and events (see make_synthetic.py)."""
