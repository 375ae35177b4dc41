"""A call's use of the answer caches: the cached answer it serves, and the good answer it keeps.

Which answers a call shares is its key (`cache_key` and `cache_scope` in `_fallback.py`). A
cache that fails never fails the call: a lookup that fails is a miss, a keep that fails is
logged. The caches are the caller's (Redis, ...); this module does no I/O of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ._dialect import Dialect
from ._events import log
from ._fallback import AnswerCache, Route
from ._steps import Serve


def cached_text(cache: AnswerCache, key: str) -> str | None:
    """The cache's answer for `key`; a cache that fails or answers no text is a miss, logged."""
    try:
        text = cache.get(key)
    except Exception as error:  # a cache that is down is a miss, never the caller's error
        log.warning("streamtap: the answer cache failed to look up an answer (a miss): %r", error)
        return None
    if isinstance(text, bytes):  # e.g. a Redis client without decode_responses
        try:
            return text.decode()
        except UnicodeDecodeError:
            pass
    if text is None or isinstance(text, str):
        return text
    log.warning("streamtap: the answer cache gave a %s, not the text it kept (a miss)", type(text).__name__)
    return None


def cached_answer(dialect: Dialect, primary: Route, text: str) -> Serve:
    """A cached answer's `text` as the caller's request asked for it: a stream of the dialect's
    events, or its JSON body."""
    if primary.stream:
        return Serve(dialect.from_text(text, primary.model), stream=True)
    return Serve(json.dumps(dialect.answer_json(text, primary.model)).encode(), stream=False)


def keep_answer(caches: Iterable[AnswerCache], key: str, text: str) -> None:
    """Keep an answer's `text` under `key` in each cache."""
    for cache in caches:
        try:
            cache.set(key, text)
        except Exception as error:  # the caller has its answer: a cache down must not take it
            log.warning("streamtap: the answer cache failed to keep an answer: %r", error)
