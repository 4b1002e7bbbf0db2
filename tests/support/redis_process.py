"""Private redis-server processes for tests (the implementation is shared with the demo)."""

from marketbus.localredis import RedisProcess, free_port

__all__ = ["RedisProcess", "free_port"]
