"""output: everything that reads or writes the output folder (bookkeeping, digests, the cache, transactions)."""
