"""Money: the double-entry ledger, balances and holds, vault operations, positions and P&L."""
