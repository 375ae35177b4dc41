"""streamtap's Prometheus rules: generated from `alerts/rules.py`, never edited by hand."""
