"""Poisoning-robustness benchmark of fltrust against Flower's aggregation rules, on real data."""
