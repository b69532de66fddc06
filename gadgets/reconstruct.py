"""The Gadgetron external gadget: ``reconstruct(connection)`` is the target for
``<execute name="mrdserve.gadgets.reconstruct" target="reconstruct" type="python"/>`` (Gadgetron runs
``python -m gadgetron <port> mrdserve.gadgets.reconstruct reconstruct``) and the handler of our own listener.

It is a thin adapter over the service: every message goes to the stream's ``StreamCore`` (``service.stream``,
shared with the MRD server: admission, prewhitening, oversampling removal, slice assembly); ReconData buffers
after BucketToBuffer are turned back into acquisitions (``gadgets.recon_data``). Each slice is reconstructed by
the process's shared engine as soon as it is complete (through its batchers, so concurrent streams batch
together) and its ISMRMRD image is sent at once. Any failure is reported with Gadgetron's ERROR message (id 8)
before the final CLOSE; reads time out, so the chain never hangs on us.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mrdserve.gadgets.connection import GadgetConnection
from mrdserve.gadgets.recon_data import bit_to_acquisitions
from mrdserve.gadgets.settings import GadgetSettings
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import GADGET_TRAJECTORIES
from mrdserve.service.engine.choice import Choice
from mrdserve.service.engine.engine import Engine
from mrdserve.service.engine.engine_thread import engine_thread
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.log import log_event
from mrdserve.service.memory import release_memory
from mrdserve.service.mrd.protocol import MessageId, ProtocolError
from mrdserve.service.stream import Action, PassBack, StreamCore, reconstruct_with_retry

log = logging.getLogger("mrdserve.gadget")

_ENGINES: dict[tuple[Any, ...], Engine] = {}
_ENGINES_LOCK = threading.Lock()
_stream_ids = itertools.count(1)
MAX_REASON_CHARS = 2000
PASSED_BACK = (MessageId.IMAGE, MessageId.WAVEFORM)  # not ours to reconstruct: back down the chain, unchanged


def shared_engine(settings: GadgetSettings) -> Engine:
    """One loaded engine per (artifact directories, device, runner) in this process. It warms nothing up: a
    gadget process started by ``<execute>`` serves one stream and should not run the artifacts it does not use."""
    config = dataclasses.replace(settings.service_config(), warmup=False)
    key = (tuple(str(p) for p in config.artifacts), config.device, config.runner)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = Engine(config)
            engine.load()
            _ENGINES[key] = engine
        return engine


class GadgetSession:
    """One Gadgetron stream: messages in, images out, ERROR on failure, CLOSE at the end (see module docstring).

    ``run_samples`` replaces the engine call (tests inject failures with it).
    """

    def __init__(self, connection: GadgetConnection, *, engine: Engine | None = None,
                 settings: GadgetSettings | None = None,
                 run_samples: Callable[[Sequence[KSpaceSample]], list[ReconResult]] | None = None) -> None:
        self.connection = connection
        self.engine = engine
        self.settings = settings
        self.run_samples = run_samples
        self.core: StreamCore | None = None
        self.id = f"gadget-{next(_stream_ids)}"

    @property
    def header(self) -> Any:
        return self.core.header if self.core is not None else None

    @property
    def images_sent(self) -> int:
        return self.core.counts["images_out"] if self.core is not None else 0

    @property
    def passed_back(self) -> int:
        return self.core.counts["passed_back"] if self.core is not None else 0

    # -- entry -------------------------------------------------------------------------------------------------

    def run(self) -> bool:
        """Serve the stream to its end; True when it ended cleanly, False after an ERROR was sent."""
        try:
            self._serve()
            return True
        except Exception as error:
            reason = f"mrdserve gadget: {type(error).__name__}: {error}"[:MAX_REASON_CHARS]
            log_event(log, "gadget_failed", logging.ERROR, reason=reason, images_sent=self.images_sent)
            self.connection.send_error(reason)
            self.connection.discard_pending()
            return False
        finally:
            self.connection.close()
            if self.core is not None:
                self.core.release()
            release_memory()

    def _serve(self) -> None:
        if self.settings is None:
            self.settings = GadgetSettings.from_config_text(self.connection.config_text)
        settings = self.settings
        if settings.read_timeout_s is not None:
            self.connection.read_timeout_s = settings.read_timeout_s
            self.connection.sock.settimeout(settings.read_timeout_s)
        self.core = StreamCore(self.connection.header_text, settings.service_config().budget,
                               prewhiten=settings.prewhiten, trajectories=GADGET_TRAJECTORIES,
                               pass_back=PASSED_BACK, ignored=(MessageId.TEXT,), series_index=settings.series_index,
                               dtype=settings.image_dtype, adapt_readout=True)
        if self.run_samples is None:
            self.run_samples = self._engine_runner(settings.choice)
        if settings.uncertainty:
            engine = self.engine if self.engine is not None else shared_engine(settings)
            engine.check_uncertainty(settings.uncertainty, "gadget property uncertainty")
        while True:
            message = self.connection.read()
            if message.id == MessageId.CLOSE:
                self._act(self.core.finish())
                log.info("stream done: %d image(s) sent, %d item(s) passed back", self.images_sent,
                         self.passed_back)
                return
            self._act(self._handle(message.id, message.value))

    def _engine_runner(self, choice: Choice) -> Callable[[Sequence[KSpaceSample]], list[ReconResult]]:
        """The engine call: the shared engine's batchers, from this blocking thread. A chain waits for its
        slices as long as they take (no request timeout; back-pressure when the queue is full), as Gadgetron
        waits for any gadget; the read timeout still ends a stream whose peer stops sending."""
        engine = self.engine if self.engine is not None else shared_engine(self.settings or GadgetSettings())
        thread = engine_thread(engine)

        def run_samples(samples: Sequence[KSpaceSample]) -> list[ReconResult]:
            return thread.call(reconstruct_with_retry(engine, list(samples), choice, self.id, retry_s=math.inf,
                                                      timeout_s=math.inf))

        return run_samples

    # -- messages ----------------------------------------------------------------------------------------------

    def _handle(self, message_id: int, value: Any) -> list[Action]:
        assert self.core is not None
        if message_id == MessageId.RECON_DATA:
            return [action for bit in value.bits for action in self.core.assemble_buffer(bit_to_acquisitions(bit))]
        if message_id == MessageId.ERROR:
            raise RuntimeError(f"Gadgetron reported an error upstream: {value[:500]}")
        if message_id == MessageId.TEXT:
            log.info("text message from Gadgetron (%d characters) ignored", len(value))
        actions = self.core.handle(message_id, value)
        if actions is None:
            name = MessageId(message_id).name if message_id in MessageId._value2member_map_ else "unknown"
            raise ProtocolError(f"message id {message_id} ({name}) is not handled by this gadget; it takes "
                                f"acquisitions (1008) or ReconData (1023)")
        return actions

    def _act(self, actions: list[Action]) -> None:
        """Pass back what is not ours; reconstruct the slices of one message together (a ReconData buffer's
        slices batch), then send their images."""
        assert self.core is not None and self.run_samples is not None
        samples = []
        for action in actions:
            if isinstance(action, PassBack):
                self.connection.send(action.value)
            else:
                samples += action.samples
        if samples:
            results = self.run_samples(samples)
            for result in results:
                self.connection.send(self.core.image(result))
            if self.settings is not None and self.settings.uncertainty:  # after the images, as on the MRD server
                self._add_uncertainty(results, self.settings.uncertainty)
                for derived in (d for result in results for d in result.derived):
                    self.connection.send(self.core.image(derived))
                for error in {result.posterior_error for result in results if result.posterior_error}:
                    log.warning("slice images sent without their uncertainty maps: %s", error)

    def _add_uncertainty(self, results: list[ReconResult], n_samples: int) -> None:
        engine = self.engine if self.engine is not None else shared_engine(self.settings or GadgetSettings())
        engine_thread(engine).call(engine.add_uncertainty(results, n_samples))


def reconstruct(connection: Any, engine: Engine | None = None, settings: GadgetSettings | None = None) -> bool:
    """Gadgetron target: serve one stream on a ``gadgetron.external.Connection`` (handshake done) or on our
    ``GadgetConnection``; True when it ended cleanly, False after an ERROR was sent."""
    if not isinstance(connection, GadgetConnection):
        connection = GadgetConnection.from_gadgetron(connection)
    return GadgetSession(connection, engine=engine, settings=settings).run()
