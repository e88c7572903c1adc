from tests.replicas.redis_server import key_prefix, own_redis_server, redis_server

__all__ = ["key_prefix", "own_redis_server", "redis_server"]
