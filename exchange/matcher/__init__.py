"""The matching worker: owns each market's in-memory book, applies the command journal,
persists every result atomically and publishes after commit."""
