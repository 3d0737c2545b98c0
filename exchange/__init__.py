"""Markets, traders, orders and trades: the order path from the API to the matcher."""
