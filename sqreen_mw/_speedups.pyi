from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

def check_common_properties(properties: object, known_keys: dict[str, int], /) -> tuple[dict[str, Any], int] | None: ...
def queue_put(queue: Any, record: tuple[Any, ...], /) -> bool: ...

class Tracker:
    def __init__(self, client: Any, fallback: Callable[..., bool], names: set[str], known_keys: dict[str, int],
                 seq: Any, queue: Any, context: ContextVar[Any], context_type: type, ip_key: str | None,
                 unreadable: Callable[[BaseException], None]) -> None: ...
    def __call__(self, event_name: str, options: Mapping[str, Any] | None, properties: Mapping[str, Any] | None,
                 user_identifiers: Mapping[str, str | int] | None, timestamp: Any, collect_body: bool,
                 request: Any, /) -> bool: ...

class Front:
    def __init__(self, fallback: Callable[..., bool], globals: dict[str, Any]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> bool: ...
