"""The static file source: a MetalLB configuration on disk, watched with inotify (watchfiles).

The directory is watched rather than the file, so editors that write a new file and rename
it over the old one, and Kubernetes' ConfigMap volume symlink swaps, are seen too. A
missing, empty (truncated mid-write) or invalid file publishes nothing: the agent keeps the
last good intent and the kernel is left as it is.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from loguru import logger

from nra.intent import ParseResult
from nra.metallb import ConfigError, parse_static_document
from nra.sources.base import Publish

# watchfiles groups changes for `step` ms after the first one; a small step keeps a
# change-to-kernel latency of a few ms while still merging an editor's write bursts.
_WATCH_STEP_MS = 5
_WATCH_DEBOUNCE_MS = 50


class StaticFileSource:
    name = "static-file"

    def __init__(self, path: str, node_name: str | None, default_weight: int):
        self.path = Path(path).absolute()
        self.node_name = node_name
        self.default_weight = default_weight
        self._last_text: str | None = None
        self._last_error: str | None = None

    def load(self) -> ParseResult | None:
        """Read and parse the file; None (after saying why, once) when it cannot be used."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._fail(f"{self.path} does not exist")
        except OSError as exc:
            return self._fail(f"cannot read {self.path}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            return self._fail(f"{self.path} is not UTF-8 text")
        if text == self._last_text and self._last_error is None:
            return None  # touched, not changed
        try:
            result = parse_static_document(text, self.node_name, self.default_weight)
        except ConfigError as exc:
            return self._fail(f"{self.path}: {exc}")
        self._last_text = text
        if self._last_error is not None:
            logger.info("{} is readable again", self.path)
        self._last_error = None
        return result

    def _fail(self, why: str) -> None:
        if why != self._last_error:
            logger.warning("{}; keeping the last good configuration", why)
        self._last_error = why
        self._last_text = None
        return None

    async def run(self, publish: Publish) -> None:
        self._publish_if_loaded(publish)
        import watchfiles  # only when watching starts: parsing alone does not need it

        directory = self.path.parent
        while True:
            if not directory.is_dir():
                self._fail(f"directory {directory} does not exist")
                await asyncio.sleep(1.0)
                continue
            changes = watchfiles.awatch(
                directory,
                watch_filter=self._concerns_us,
                step=_WATCH_STEP_MS,
                debounce=_WATCH_DEBOUNCE_MS,
                recursive=False,
                ignore_permission_denied=True,
            )
            next_change = asyncio.ensure_future(anext(changes))
            # awatch sets up its inotify watch synchronously on its first step; from then on
            # it records changes. Read once more now, so a change made between the read
            # above and the watch is not missed.
            await asyncio.sleep(0)
            self._publish_if_loaded(publish)
            try:
                while True:
                    try:
                        await next_change
                    except StopAsyncIteration:
                        break
                    self._publish_if_loaded(publish)
                    next_change = asyncio.ensure_future(anext(changes))
            finally:
                next_change.cancel()
                await asyncio.gather(next_change, return_exceptions=True)
                await changes.aclose()
            # awatch ends if the directory itself goes away; wait for it to come back.
            await asyncio.sleep(0.5)

    def _publish_if_loaded(self, publish: Publish) -> None:
        result = self.load()
        if result is not None:
            publish(result)

    def _concerns_us(self, _change, path: str) -> bool:
        # ConfigMap volumes swap a `..data` symlink; any change there may change our file.
        name = os.path.basename(path)
        return path == str(self.path) or name.startswith("..")
