"""Encoders: canonical records -> partner wire formats, for synthetic test feeds only."""
