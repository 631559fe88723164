"""Frame streams: bytes in, bytes out. TCP for real links, an in-memory twin for tests."""
