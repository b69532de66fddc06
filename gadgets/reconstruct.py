"""The Gadgetron external gadget: ``reconstruct(connection)`` is the target for
``<execute name="mrdserve.gadgets.reconstruct" target="reconstruct" type="python"/>`` (Gadgetron runs
``python -m gadgetron <port> gadgets.reconstruct reconstruct``) and the handler of our own listener.

It is a thin adapter over the service: raw acquisitions go through one ``AcquisitionAssembler`` per stream
(prewhitening, oversampling removal, slice assembly); ReconData buffers after BucketToBuffer are turned back into
acquisitions (``gadgets.recon_data``). Each slice is reconstructed by the shared ``Engine`` as soon as it is
complete and its ISMRMRD image is sent at once. Any failure is reported with Gadgetron's ERROR message (id 8)
before the final CLOSE; reads time out, so the chain never hangs on us.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import ismrmrd

from mrdserve.gadgets.connection import GadgetConnection
from mrdserve.gadgets.recon_data import ReconData, bit_to_acquisitions
from mrdserve.gadgets.settings import GadgetSettings
from mrdserve.models.data.acquisitions import AcquisitionAssembler
from mrdserve.models.data.ismrmrd_header import encoding_info, header_to_xml, parse_header
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import GADGET_TRAJECTORIES, StreamBudget, admit_header, check_samples
from mrdserve.service.engine.engine import Engine
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.log import log_event
from mrdserve.service.memory import release_memory
from mrdserve.service.mrd.protocol import MessageId, ProtocolError
from mrdserve.service.outputs.ismrmrd_images import to_ismrmrd_images

log = logging.getLogger("mrdserve.gadget")

_ENGINES: dict[tuple[Any, ...], Engine] = {}
_ENGINES_LOCK = threading.Lock()
_RUN_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
MAX_REASON_CHARS = 2000


def shared_engine(settings: GadgetSettings) -> Engine:
    """One loaded engine per (artifact directories, device, runner) in this process."""
    config = settings.service_config()
    key = (tuple(str(p) for p in config.artifacts), config.device, config.runner)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = Engine(config)
            engine.load()
            _ENGINES[key] = engine
        return engine


def _run_lock(engine: Engine) -> threading.Lock:
    with _ENGINES_LOCK:
        return _RUN_LOCKS.setdefault(engine, threading.Lock())


def header_for_readout(header: Any, number_of_samples: int) -> Any:
    """``header``, or a copy whose encoded readout matches data that already lost its readout oversampling
    (Gadgetron's RemoveROOversampling shortens the readouts but leaves the header as it was)."""
    info = encoding_info(header)
    after = info.readout_length_after_oversampling
    if info.trajectory not in ("cartesian", "epi") or not number_of_samples <= after < info.encoded_matrix[0]:
        return header
    adapted = parse_header(header_to_xml(header))
    encoded = adapted.encoding[0].encodedSpace
    encoded.matrixSize.x = after
    encoded.fieldOfView_mm.x = adapted.encoding[0].reconSpace.fieldOfView_mm.x
    return adapted


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
        self.header: Any = None
        self.images_sent = 0
        self.passed_back = 0
        self._assembler: AcquisitionAssembler | None = None
        self._pending_noise: list[ismrmrd.Acquisition] = []
        self._headers_by_readout: dict[int, Any] = {}  # header_for_readout per readout length (re-parses XML)
        self._budget: StreamBudget | None = None

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
            self._assembler = None
            release_memory()

    def _serve(self) -> None:
        if self.settings is None:
            self.settings = GadgetSettings.from_config_text(self.connection.config_text)
        if self.settings.read_timeout_s is not None:
            self.connection.read_timeout_s = self.settings.read_timeout_s
            self.connection.sock.settimeout(self.settings.read_timeout_s)
        budget = self.settings.service_config().budget
        self.header = admit_header(self.connection.header_text, budget, trajectories=GADGET_TRAJECTORIES)
        self._budget = StreamBudget(self.header, budget)
        if self.run_samples is None:
            engine = self.engine if self.engine is not None else shared_engine(self.settings)
            engine.load()
            lock, artifact = _run_lock(engine), self.settings.artifact_choice

            def run_samples(samples: Sequence[KSpaceSample]) -> list[ReconResult]:
                with lock:
                    return engine.reconstruct_sync(samples, artifact=artifact, method=self.settings.method)

            self.run_samples = run_samples
        while True:
            message = self.connection.read()
            if message.id == MessageId.CLOSE:
                self._finish()
                log.info("stream done: %d image(s) sent, %d item(s) passed back", self.images_sent,
                         self.passed_back)
                return
            self._handle(message.id, message.value)

    # -- messages ----------------------------------------------------------------------------------------------

    def _handle(self, message_id: int, value: Any) -> None:
        if message_id == MessageId.ACQUISITION:
            self._reconstruct(self._add_acquisition(value))
        elif message_id == MessageId.RECON_DATA:
            self._reconstruct(self._recon_data_samples(value))
        elif message_id in (MessageId.IMAGE, MessageId.WAVEFORM):
            self.connection.send(value)  # not ours to reconstruct: back to the chain, unchanged
            self.passed_back += 1
        elif message_id == MessageId.TEXT:
            log.info("text message from Gadgetron (%d characters) ignored", len(value))
        elif message_id == MessageId.ERROR:
            raise RuntimeError(f"Gadgetron reported an error upstream: {value[:500]}")
        else:
            name = MessageId(message_id).name if message_id in MessageId._value2member_map_ else "unknown"
            raise ProtocolError(f"message id {message_id} ({name}) is not handled by this gadget; it takes "
                                f"acquisitions (1008) or ReconData (1023)")

    def _add_acquisition(self, acq: ismrmrd.Acquisition) -> list[KSpaceSample]:
        assert self._budget is not None
        self._budget.check_acquisition(int(acq.active_channels), int(acq.number_of_samples))
        if self._assembler is None:
            if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                self._pending_noise.append(acq)  # the assembler's header depends on the first data readout
                self._budget.check_buffered(sum(noise.data.nbytes for noise in self._pending_noise))
                return []
            header = self._header_for_readout(int(acq.number_of_samples))
            self._assembler = AcquisitionAssembler(header, prewhiten=bool(self.settings and self.settings.prewhiten))
            for noise in self._pending_noise:
                self._assembler.add(noise)
            self._pending_noise.clear()
        samples = self._assembler.add(acq)
        self._budget.check_buffered(self._assembler.buffered_bytes)
        return samples

    def _header_for_readout(self, number_of_samples: int) -> Any:
        """``header_for_readout`` once per readout length: ReconData brings one bit per slice, same length."""
        if number_of_samples not in self._headers_by_readout:
            self._headers_by_readout[number_of_samples] = header_for_readout(self.header, number_of_samples)
        return self._headers_by_readout[number_of_samples]

    def _recon_data_samples(self, recon_data: ReconData) -> list[KSpaceSample]:
        samples: list[KSpaceSample] = []
        for bit in recon_data.bits:
            acquisitions = bit_to_acquisitions(bit)
            if not acquisitions:
                raise ValueError("a ReconData bit holds no acquired lines (every header is empty)")
            header = self._header_for_readout(int(acquisitions[0].number_of_samples))
            assembler = AcquisitionAssembler(header, prewhiten=False)  # NoiseAdjust ran in Gadgetron, if at all
            for acq in acquisitions:
                samples.extend(assembler.add(acq))
            samples.extend(assembler.finish(require_data=False))
        return samples

    def _finish(self) -> None:
        if self._assembler is not None:
            self._reconstruct(self._assembler.finish(require_data=False))

    def _reconstruct(self, samples: list[KSpaceSample]) -> None:
        if not samples:
            return
        check_samples(samples)
        assert self.run_samples is not None and self.settings is not None
        results = self.run_samples(samples)
        images = to_ismrmrd_images(results, self.header, series_index=self.settings.series_index,
                                   dtype=self.settings.image_dtype, first_image_index=self.images_sent + 1)
        for image in images:
            self.connection.send(image)
        self.images_sent += len(images)


def reconstruct(connection: Any, engine: Engine | None = None, settings: GadgetSettings | None = None) -> bool:
    """Gadgetron target: serve one stream on a ``gadgetron.external.Connection`` (handshake done) or on our
    ``GadgetConnection``; True when it ended cleanly, False after an ERROR was sent."""
    if not isinstance(connection, GadgetConnection):
        connection = GadgetConnection.from_gadgetron(connection)
    return GadgetSession(connection, engine=engine, settings=settings).run()
