"""Results: paired significance tests and summaries over seeds (``bootstrap``)."""
