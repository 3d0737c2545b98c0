"""Write operations of the exchange. Each entry point owns its transaction."""
