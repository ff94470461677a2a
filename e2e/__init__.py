"""The closed loop, end to end, with the real programs (``make e2e``; ``make test`` runs a short form)."""
