"""Write operations on money. Each entry point owns its transaction."""
