"""The service's database: client keys and the usage ledger (SQLAlchemy 2, asyncio)."""
