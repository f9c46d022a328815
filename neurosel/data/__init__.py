"""Data preparation (stage 0) and features (stage 1) on top of Lhotse."""
