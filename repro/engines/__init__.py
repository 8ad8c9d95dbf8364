"""Adapters that run repro's stage functions inside other training engines (verl: engines/verl.py)."""
