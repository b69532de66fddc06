"""One MRD connection: config, header, optional JSON parameters, acquisitions in, images out, always CLOSE.

The session reads CONFIG_FILE or CONFIG_TEXT, then HEADER (or CLOSE: Gadgetron's noise-dependency query), waits
(bounded) for the engine to be ready, resolves the config into the engine's ``Choice``, then hands every
data-phase message to the stream's ``StreamCore`` (``service.stream``, shared with the gadget). Each slice the
core completes becomes an asyncio task that reconstructs it through the shared engine (its batcher batches across
connections) and writes its image as soon as it is done, while reading goes on. Waveforms are counted and kept
out, images from the client go back unchanged. At the client's CLOSE the core is flushed, outstanding slices are
awaited and sent, a summary TEXT follows.

Every ending sends CLOSE; an error (malformed stream, bad header, unknown config, failed slice) is sent first as a
TEXT line starting with ``ERROR:``. TEXT lines and logs never carry names or ids from the header.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from mrdserve.models.data.baseline import METHODS
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import Budget
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.choice import Choice
from mrdserve.service.log import log_event
from mrdserve.service.memory import release_memory
from mrdserve.service.mrd.configs import UnknownConfigError, resolve
from mrdserve.service.mrd.protocol import (
    Limits,
    MessageId,
    ProtocolError,
    StreamEndedError,
    encode_close,
    encode_object,
    encode_text,
    read_message,
)
from mrdserve.service.outputs.ismrmrd_images import IMAGE_DTYPES
from mrdserve.service.posterior import check_uncertainty
from mrdserve.service.stream import PassBack, StreamCore, reconstruct_with_retry

logger = logging.getLogger("mrdserve.mrd")

ENTRYPOINT = "mrd"
MAX_SERIES_INDEX = 65535  # image_series_index is a uint16
ENGINE_WAIT_S = 120.0  # how long a session that arrives during start-up waits for the engine
SEND_TIMEOUT_S = 30.0  # a client that stops reading for this long loses its stream
READ_TIMEOUT_S = ServiceConfig.read_timeout_s  # a client that sends nothing for this long loses its stream
DEFAULT_LIMITS = Limits()
_session_ids = itertools.count(1)


class SessionError(Exception):
    """Ends the stream: the message goes to the client as an ERROR TEXT line, then CLOSE."""


@dataclass
class StreamParameters:
    """Settings from the optional JSON TEXT after the header (python-ismrmrd-server style, or flat)."""

    config: str | None = None  # replaces the config name (python-ismrmrd-server's parameters.config)
    artifact: str | None = None  # an artifact name/label or "classical", for every slice
    method: str = "auto"  # the classical method wherever the classical path is used (models.data.baseline)
    dtype: str = "float32"  # output image data type: float32 or uint16
    series_index: int = 1
    uncertainty: int = 0  # posterior samples per slice for uncertainty maps (service.posterior); 0: none
    ignored: list[str] = field(default_factory=list)  # keys we do not use, reported back to the client


def parse_parameters(text: str) -> StreamParameters:
    """``StreamParameters`` from JSON text; SessionError naming the field that is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SessionError(f"the TEXT message after the header must be JSON parameters: {error}") from None
    if not isinstance(document, dict):
        raise SessionError("the JSON parameters must be an object, e.g. {\"artifact\": \"demo-xpdnet\"}")
    values = dict(document)
    nested = values.pop("parameters", None)
    if nested is not None:
        if not isinstance(nested, dict):
            raise SessionError("parameters: must be a JSON object")
        values.update(nested)
    params = StreamParameters()
    for key, value in values.items():
        if key in ("config", "customconfig", "artifact"):
            if value in (None, ""):
                continue
            if not isinstance(value, str) or len(value) > 200:
                raise SessionError(f"{key}: must be a name (a string of at most 200 characters)")
            if key == "artifact":
                params.artifact = value
            else:
                params.config = value
        elif key == "method":
            if value not in METHODS:
                raise SessionError(f"method: must be one of {', '.join(METHODS)}, got {str(value)[:100]!r}")
            params.method = value
        elif key in ("dtype", "output_dtype"):
            if value not in IMAGE_DTYPES:
                raise SessionError(f"{key}: must be one of {', '.join(IMAGE_DTYPES)}, got {value!r}")
            params.dtype = value
        elif key == "series_index":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SERIES_INDEX:
                raise SessionError(f"series_index: must be an integer in 0..65535, got {value!r}")
            params.series_index = value
        elif key == "uncertainty":
            try:
                params.uncertainty = check_uncertainty(value)
            except ValueError as error:
                raise SessionError(str(error)) from None
        else:
            params.ignored.append(str(key)[:50])
    return params


class MrdSession:
    """Serves one connection; ``run`` never raises for anything the client does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Any, *,
                 limits: Limits = DEFAULT_LIMITS, engine_wait_s: float = ENGINE_WAIT_S, budget: Budget | None = None,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.reader, self.writer, self.engine = reader, writer, engine
        self.limits, self.engine_wait_s, self.read_timeout_s = limits, engine_wait_s, read_timeout_s
        self.budget = budget or Budget()
        self.id = f"mrd-{next(_session_ids)}"
        self.choice: Choice | None = None
        self.params = StreamParameters()
        self.core: StreamCore | None = None
        self._write_lock = asyncio.Lock()
        self._pending: set[asyncio.Task] = set()
        self._pending_bytes = 0  # k-space of slices waiting for or in reconstruction
        self._reader_task: asyncio.Task | None = None
        self._failure: str | None = None
        self._labels: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        started = time.perf_counter()
        peer = self.writer.get_extra_info("peername")
        log_event(logger, "mrd_open", session=self.id, peer=str(peer[0]) if peer else "")
        error: str | None = None
        outcome = "ok"
        try:
            outcome = await self._serve()
        except SessionError as failure:
            error = str(failure)
        except ProtocolError as failure:
            error = f"malformed stream: {failure}"
        except StreamEndedError:
            error = "the client closed the connection without sending CLOSE"
        except TimeoutError:  # before OSError, of which it is a subclass
            error = f"no message for {self.read_timeout_s:g} s; the stream was closed (MRDSERVE_READ_TIMEOUT_S)"
        except (ConnectionError, OSError) as failure:
            error = f"connection lost: {failure}"
        except asyncio.CancelledError:
            error = "the server is shutting down; the stream was cut before its CLOSE"
        except Exception as failure:  # a bug of ours: end this stream only, with a reason
            logger.exception("mrd session %s failed", self.id)
            error = f"internal error: {type(failure).__name__}: {str(failure)[:300]}"
        finally:
            await self._cancel_pending()
            if error is not None:
                outcome = "error"
                await self._send(encode_text(f"ERROR: {error}"))
            await self._send(encode_close())
            self.writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):  # the peer may be gone already
                await asyncio.wait_for(self.writer.wait_closed(), 5)
            log_event(logger, "mrd_close", logging.WARNING if error else logging.INFO, session=self.id,
                      outcome=outcome, error=error, config=self.choice.name if self.choice else None,
                      labels=self._labels, duration_ms=round(1000 * (time.perf_counter() - started), 1),
                      **(dict(self.core.counts) if self.core is not None else {}))
            if self.core is not None:
                self.core.release()
            release_memory()  # an unfinished slice's buffers go back to the system with the stream

    async def _serve(self) -> str:
        """The protocol up to the data phase, then the data phase; returns the outcome for the log."""
        first = await self._read()
        if first.id == MessageId.CLOSE:
            return "empty"  # connected and closed: nothing to do but answer CLOSE
        if first.id not in (MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT):
            raise SessionError(f"expected CONFIG_FILE (1) or CONFIG_TEXT (2) first, got message id {first.id}")
        given = None if first.id == MessageId.CONFIG_FILE else self._config_text_parameters(first.value)
        config_name = first.value if first.id == MessageId.CONFIG_FILE else \
            (given.config or "default") if given is not None else self._config_text_name(first.value)
        second = await self._read()
        if second.id == MessageId.CLOSE:
            # Noise-dependency query: a config, then CLOSE before any header. Gadgetron (HeaderConnection ->
            # VoidConnection) runs the chain with no input and its connection handler then sends any errors as
            # TEXT and CLOSE; python-ismrmrd-server returns without processing. We keep no dependencies between
            # measurements (noise scans inside the stream are used), so the answer is CLOSE alone.
            log_event(logger, "mrd_dependency_query", session=self.id)
            return "dependency_query"
        if second.id != MessageId.HEADER:
            raise SessionError(f"expected the ISMRMRD HEADER (3) after the config, got message id {second.id}")
        try:
            self.core = StreamCore(second.value, self.budget)  # strips trailing NULs (python-ismrmrd-server)
        except (ValueError, TypeError) as error:
            raise SessionError(f"the HEADER is not a usable ISMRMRD header: {error}") from None
        await self._wait_for_engine()
        self.choice = self._resolve(config_name)
        await self._send(encode_text(f"mrdserve: {self.choice.describe()}"))
        if given is not None:
            await self._apply(given)
        log_event(logger, "mrd_config", session=self.id, config=self.choice.name, mode=str(self.choice.mode),
                  artifact=self.choice.artifact, trajectory=self.core.info.trajectory)
        self._reader_task = asyncio.create_task(self._read_data())
        try:
            await self._reader_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._failure is not None and current is not None and not current.cancelling():
                raise SessionError(self._failure) from None
            raise
        if self._failure is not None:
            raise SessionError(self._failure)
        return "ok"

    async def _read(self) -> Any:
        """The next message, or TimeoutError when the client sends nothing for ``read_timeout_s``."""
        async with asyncio.timeout(self.read_timeout_s):
            return await read_message(self.reader, self.limits)

    @staticmethod
    def _config_text_parameters(text: str) -> StreamParameters | None:
        """JSON parameters sent as CONFIG_TEXT (python-ismrmrd-server and OpenRecon style), else None."""
        stripped = text.strip("\x00 \t\r\n")
        return parse_parameters(stripped) if stripped.startswith("{") else None

    @staticmethod
    def _config_text_name(text: str) -> str:
        """CONFIG_TEXT carries a Gadgetron chain XML or a bare name: we take a bare name only."""
        stripped = text.strip("\x00 \t\r\n")
        if stripped.startswith("<"):
            raise SessionError("CONFIG_TEXT holds a Gadgetron chain XML; this server takes a config name "
                               "(default, classical, cartesian, noncartesian or an artifact name)")
        return stripped

    async def _wait_for_engine(self) -> None:
        deadline = time.monotonic() + self.engine_wait_s
        while not getattr(self.engine, "ready", True):
            if time.monotonic() >= deadline:
                raise SessionError(f"the reconstruction engine is not ready after {self.engine_wait_s:g} s "
                                   "(loading or warming up its artifacts, or it failed to start); retry later")
            await asyncio.sleep(0.05)

    def _resolve(self, name: str) -> Choice:
        try:
            return resolve(name, self.engine.artifacts)
        except UnknownConfigError as error:
            raise SessionError(str(error)) from None

    # ------------------------------------------------------------------------------------------- data phase
    async def _read_data(self) -> None:
        core = self.core
        assert core is not None
        expecting_parameters = True
        while True:
            message = await self._read()
            if message.id == MessageId.TEXT and expecting_parameters:
                await self._apply_parameters(message.value)
                expecting_parameters = False
                continue
            expecting_parameters = False
            if message.id == MessageId.CLOSE:
                await self._finish(core)
                return
            try:
                actions = core.handle(message.id, message.value)
            except ValueError as error:
                raise SessionError(str(error)) from None
            if actions is None:
                raise SessionError(f"message id {message.id} ({MessageId(message.id).name}) is not allowed after "
                                   f"the header")
            await self._act(actions)
            await self._hold_back(core.buffered_bytes)

    async def _act(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, PassBack):
                await self._send(encode_object(action.value))
                continue
            for sample in action.samples:
                self._start_slice(sample, action.received, action.assemble_s)

    async def _apply_parameters(self, text: str) -> None:
        await self._apply(parse_parameters(text))

    async def _apply(self, params: StreamParameters) -> None:
        """JSON parameters (or OpenRecon's UI parameters): config or artifact, classical method, output."""
        if params.config is not None:
            self.choice = self._resolve(params.config)
        if params.artifact is not None:
            self.choice = self._resolve(params.artifact)
        assert self.choice is not None and self.core is not None
        self.choice = self.choice.with_method(params.method)  # a method-named config keeps its method
        if params.uncertainty:
            try:
                self.engine.check_uncertainty(params.uncertainty)  # a score prior is configured
            except ValueError as error:
                raise SessionError(str(error)) from None
            if params.series_index > MAX_SERIES_INDEX - 2:
                raise SessionError(f"series_index: at most {MAX_SERIES_INDEX - 2} with uncertainty maps (they take "
                                   f"the next two series indices), got {params.series_index}")
        self.params = params
        self.core.series_index, self.core.dtype = params.series_index, params.dtype
        note = f"; ignored unknown field(s): {', '.join(params.ignored)}" if params.ignored else ""
        maps = (f", uncertainty maps from {params.uncertainty} posterior samples per slice in series "
                f"{params.series_index + 1} (mean) and {params.series_index + 2} (standard deviation)"
                if params.uncertainty else "")
        await self._send(encode_text(f"mrdserve: parameters accepted ({self.choice.describe()}, dtype "
                                     f"{params.dtype}, series_index {params.series_index}{maps}){note}"))

    async def _finish(self, core: StreamCore) -> None:
        """The client's CLOSE: flush open slices, wait for every slice, send the summary."""
        try:
            actions = core.finish()
        except ValueError as error:
            raise SessionError(str(error)) from None
        await self._act(actions)
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._failure is not None:
            return
        try:
            core.check_had_data()
        except ValueError as error:
            raise SessionError(str(error)) from None
        await self._send(encode_text(core.summary()))

    # ------------------------------------------------------------------------------------------- slices
    def _start_slice(self, sample: KSpaceSample, received: float, assemble_s: float) -> None:
        size = sample.kspace.nbytes
        self._pending_bytes += size
        task = asyncio.create_task(self._reconstruct_slice(sample, received, assemble_s))
        self._pending.add(task)

        def done(finished: asyncio.Task) -> None:
            self._pending.discard(finished)
            self._pending_bytes -= size

        task.add_done_callback(done)

    async def _hold_back(self, buffered_bytes: int) -> None:
        """Back-pressure: stop reading while the slices waiting for reconstruction and the incomplete ones hold
        more than the budget (the client's sends then wait in TCP)."""
        while self._pending and self._pending_bytes + buffered_bytes > self.budget.max_request_bytes:
            await asyncio.wait(set(self._pending), return_when=asyncio.FIRST_COMPLETED)

    async def _reconstruct_slice(self, sample: KSpaceSample, received: float, assemble_s: float) -> None:
        where = f"slice {sample.index.slice} (contrast {sample.index.contrast}, repetition " \
                f"{sample.index.repetition})"
        label = "none"
        inflight = self.engine.metrics.inflight_requests
        inflight.inc()
        assert self.choice is not None
        try:
            [result] = await reconstruct_with_retry(self.engine, [sample], self.choice, self.id)
            label = str(result.label)
            reconstructed = time.perf_counter()
            await self._write_image(result)
            sent = time.perf_counter()
            if self.params.uncertainty:  # after the image: the scanner shows it while the sampling runs
                await self.engine.add_uncertainty([result], self.params.uncertainty)
                for derived in result.derived:
                    await self._write_image(derived)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.engine.metrics.count_request(ENTRYPOINT, label, "failed")
            self._fail(f"{where} failed: {self._explain(error)}")
            return
        finally:
            inflight.dec()
        metrics = self.engine.metrics
        metrics.count_request(ENTRYPOINT, label, "ok")
        metrics.observe_stage("ingest", assemble_s)
        metrics.observe_stage("output", sent - reconstructed)
        metrics.observe_stage("total", sent - received)
        self._labels[label] = self._labels.get(label, 0) + 1
        timings = " ".join(f"{stage}={1000 * seconds:.1f}ms" for stage, seconds in result.timings.items())
        made_by = f"classical fallback ({result.fallback_reason})" if result.fallback_reason else label
        maps = (f"; uncertainty maps: {result.derived[0].note}" if result.derived
                else f"; WARNING: {result.posterior_error}" if result.posterior_error else "")
        await self._send(encode_text(f"mrdserve: {where}: {made_by}; {timings} total={1000 * (sent - received):.1f}ms"
                                     f"{maps}"))

    async def _write_image(self, result: Any) -> None:
        assert self.core is not None
        async with self._write_lock:
            self.writer.write(encode_object(self.core.image(result)))
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.writer.drain()

    @staticmethod
    def _explain(error: Exception) -> str:
        from mrdserve.service.engine.batcher import QueueFullError, ReconstructionError

        if isinstance(error, QueueFullError):
            return f"the server is busy: {error}"
        if isinstance(error, TimeoutError):
            return str(error) or "the reconstruction timed out"
        if isinstance(error, ReconstructionError | ValueError):
            return str(error)
        return f"{type(error).__name__}: {str(error)[:300]}"

    def _fail(self, reason: str) -> None:
        """A slice failed: remember the first reason and stop reading (the stream then ends with it)."""
        if self._failure is None:
            self._failure = reason
            if self._reader_task is not None and not self._reader_task.done():
                self._reader_task.cancel()

    async def _cancel_pending(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # ------------------------------------------------------------------------------------------- output
    async def _send(self, payload: bytes) -> None:
        """Write under the connection's lock; a peer that went away is not an error here."""
        if self.writer.is_closing():
            return
        try:
            async with self._write_lock:
                self.writer.write(payload)
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.writer.drain()
        except (ConnectionError, OSError, TimeoutError):
            pass

