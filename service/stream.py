"""The state machine of one acquisition stream, shared by the MRD server and the Gadgetron gadget (sans-IO).

A ``StreamCore`` is made from the stream's header (admitted against the budget) and consumes the data-phase
messages one at a time; ``handle`` answers with actions for the caller's IO: ``Reconstruct`` (slices the
assembler completed, to reconstruct and send back) or ``PassBack`` (an object that goes back unchanged). ``finish``
flushes the open slices at the stream's end. ``image`` turns each result into the stream's next ISMRMRD image
(running image index). The asyncio MRD session and the blocking gadget only read, write and run the engine.

Images of a stream are sent one by one as they are reconstructed, so each carries its own display window and, as
uint16, its own slope (``RealWorldValueSlope`` in its meta): a stream cannot know the slices still to come.
Files (REST, ``mrdserve recon``) get one window and one slope for the whole series.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ismrmrd

from mrdserve.models.data.acquisitions import AcquisitionAssembler
from mrdserve.models.data.input_errors import InputError
from mrdserve.models.data.ismrmrd_header import encoding_info, header_to_xml, parse_header
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import SUPPORTED_TRAJECTORIES, Budget, StreamBudget, admit_header, check_samples
from mrdserve.service.engine.batcher import QueueFullError, ShuttingDownError
from mrdserve.service.engine.choice import Choice
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.mrd.protocol import MessageId
from mrdserve.service.outputs.ismrmrd_images import to_ismrmrd_images


@dataclass(frozen=True)
class Reconstruct:
    """Slices to reconstruct; ``received`` is when the message that completed them arrived (perf_counter) and
    ``assemble_s`` how long assembling them took."""

    samples: list[KSpaceSample]
    received: float
    assemble_s: float


@dataclass(frozen=True)
class PassBack:
    """An object that is not ours to reconstruct: back to the peer, unchanged."""

    value: Any


Action = Reconstruct | PassBack


def _named(error: ValueError, where: str) -> ValueError:
    """``error`` with ``where`` in front of its message, of the same kind (an ``InputError`` keeps its code)."""
    if isinstance(error, InputError):
        return type(error)(f"{where}: {error}", error.code)
    return ValueError(f"{where}: {error}")


IGNORED_COUNTS = {MessageId.WAVEFORM: "waveforms", MessageId.TEXT: "texts", MessageId.NDARRAY: "arrays"}
COUNTS = ("acquisitions", "slices", "images_out", "passed_back", *IGNORED_COUNTS.values())
QUEUE_RETRY_S = 30.0  # how long a stream's slice retries while the batch queue is full before the stream fails


async def reconstruct_with_retry(engine: Any, samples: list[KSpaceSample], choice: Choice, request_id: str, *,
                                 retry_s: float = QUEUE_RETRY_S,
                                 timeout_s: float | None = None) -> list[ReconResult]:
    """``engine.reconstruct`` for a stream: while the queue is full a stream waits (back-pressure) rather than
    losing a slice, for up to ``retry_s`` (``math.inf``: as long as it takes); a shutting-down engine fails at once.
    ``timeout_s`` bounds each attempt (None: the engine's ``request_timeout_s``; ``math.inf``: no bound)."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            kwargs = {} if timeout_s is None else {"timeout_s": timeout_s}
            return await engine.reconstruct(samples, choice, request_id=request_id, **kwargs)
        except ShuttingDownError:
            raise
        except QueueFullError as error:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(min(max(error.retry_after_s, 0.01), 0.25))


def header_for_readout(header: Any, number_of_samples: int) -> Any:
    """``header``, or a copy whose encoded readout matches data that already lost its readout oversampling
    (Gadgetron's RemoveROOversampling shortens the readouts but leaves the header as it was)."""
    info = encoding_info(header)
    after = info.readout_length_after_oversampling
    if info.trajectory not in ("cartesian", "epi") or not number_of_samples <= after < info.encoded_matrix.x:
        return header
    adapted = parse_header(header_to_xml(header))
    encoded = adapted.encoding[0].encodedSpace
    encoded.matrixSize.x = after
    encoded.fieldOfView_mm.x = adapted.encoding[0].reconSpace.fieldOfView_mm.x
    return adapted


class StreamCore:
    """One stream: admitted header, assembler, budget, counts and running image index (see the module docstring).

    ``pass_back`` are the message ids that go back unchanged (images always; the gadget also passes waveforms
    down its chain), ``ignored`` those counted and dropped (the MRD server drops waveforms, log TEXT lines and
    NDArrays). ``adapt_readout`` (the gadget) takes the header's encoded readout from the first imaging readout
    when an upstream gadget already removed the oversampling (``header_for_readout``); an MRD client sends what
    its header says. ``handle`` returns None for a message id it does not take, which the caller handles or refuses.
    Errors are ``ValueError``s (``InputError``/``LimitError``) whose text names the acquisition and what is wrong.
    """

    def __init__(self, header: Any, budget: Budget, *, prewhiten: bool = True,
                 trajectories: tuple[str, ...] = SUPPORTED_TRAJECTORIES,
                 pass_back: tuple[int, ...] = (MessageId.IMAGE,),
                 ignored: tuple[int, ...] = (MessageId.WAVEFORM, MessageId.TEXT, MessageId.NDARRAY),
                 series_index: int = 1, dtype: str = "float32", adapt_readout: bool = False) -> None:
        self.header = admit_header(header, budget, trajectories=trajectories)
        self.info = encoding_info(self.header)
        self.budget = StreamBudget(self.header, budget)
        self.prewhiten = prewhiten
        self.pass_back = pass_back
        self.ignored = ignored
        self.adapt_readout = adapt_readout
        self.series_index = series_index
        self.dtype = dtype
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNTS, 0))  # every count in the logs, zeros too
        self._assembler: AcquisitionAssembler | None = None
        self._pending_noise: list[ismrmrd.Acquisition] = []  # before the first readout says the header to use
        self._headers_by_readout: dict[int, Any] = {}
        self._images_sent: Counter[str] = Counter()  # per image role: each series counts its own image index

    @property
    def buffered_bytes(self) -> int:
        """What the incomplete slices and the noise scans waiting for the first readout hold."""
        waiting = sum(noise.data.nbytes for noise in self._pending_noise)
        return waiting + (self._assembler.buffered_bytes if self._assembler is not None else 0)

    # -- messages ----------------------------------------------------------------------------------------------

    def handle(self, message_id: int, value: Any) -> list[Action] | None:
        """The actions one data-phase message asks for; None when the message id is not a stream message."""
        if message_id == MessageId.ACQUISITION:
            return self._acquisition(value)
        if message_id in self.pass_back:
            self.counts["passed_back"] += 1
            return [PassBack(value)]
        if message_id in self.ignored:
            self.counts[IGNORED_COUNTS[MessageId(message_id)]] += 1  # not part of the reconstruction
            return []
        return None

    def _acquisition(self, acquisition: ismrmrd.Acquisition) -> list[Action]:
        self.counts["acquisitions"] += 1
        received = time.perf_counter()
        try:
            self.budget.check_acquisition(int(acquisition.active_channels), int(acquisition.number_of_samples))
            samples = self._add(acquisition)
            self.budget.check_buffered(self.buffered_bytes)
            check_samples(samples)
        except ValueError as error:
            raise _named(error, f"acquisition {self.counts['acquisitions']} cannot be used") from None
        return self._reconstruct(samples, received)

    def _add(self, acquisition: ismrmrd.Acquisition) -> list[KSpaceSample]:
        if self._assembler is None:
            if acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                self._pending_noise.append(acquisition)  # the assembler's header depends on the first data readout
                return []
            header = (self.header_for_readout(int(acquisition.number_of_samples)) if self.adapt_readout
                      else self.header)
            self._assembler = AcquisitionAssembler(header, prewhiten=self.prewhiten)
            for noise in self._pending_noise:
                self._assembler.add(noise)
            self._pending_noise.clear()
        return self._assembler.add(acquisition)

    def header_for_readout(self, number_of_samples: int) -> Any:
        """``header_for_readout`` once per readout length (buffers bring one readout length per slice)."""
        if number_of_samples not in self._headers_by_readout:
            self._headers_by_readout[number_of_samples] = header_for_readout(self.header, number_of_samples)
        return self._headers_by_readout[number_of_samples]

    def assemble_buffer(self, acquisitions: Sequence[ismrmrd.Acquisition]) -> list[Action]:
        """A complete buffer of acquisitions (a ReconData bit after BucketToBuffer), assembled on its own and
        never prewhitened (NoiseAdjust ran upstream, if at all)."""
        if not acquisitions:
            raise ValueError("a ReconData bit holds no acquired lines (every header is empty)")
        received = time.perf_counter()
        assembler = AcquisitionAssembler(self.header_for_readout(int(acquisitions[0].number_of_samples)),
                                         prewhiten=False)
        samples = [sample for acquisition in acquisitions for sample in assembler.add(acquisition)]
        samples += assembler.finish(require_data=False)
        check_samples(samples)
        return self._reconstruct(samples, received)

    def _reconstruct(self, samples: list[KSpaceSample], received: float) -> list[Action]:
        if not samples:
            return []
        self.counts["slices"] += len(samples)
        return [Reconstruct(samples, received, time.perf_counter() - received)]

    def finish(self) -> list[Action]:
        """The stream's end (CLOSE): the open slices, flushed."""
        if self._assembler is None:
            return []
        received = time.perf_counter()
        try:
            samples = self._assembler.finish(require_data=False)
            check_samples(samples)
        except ValueError as error:
            raise _named(error, "the stream's last slice cannot be used") from None
        return self._reconstruct(samples, received)

    def release(self) -> None:
        """Drop the buffers of unfinished slices (the stream ended or failed)."""
        self._assembler = None
        self._pending_noise.clear()

    # -- images ------------------------------------------------------------------------------------------------

    def image(self, result: ReconResult) -> ismrmrd.Image:
        """The stream's next ISMRMRD image of ``result``'s series (image index counted over the stream, per series:
        posterior images are series of their own)."""
        self._images_sent[result.role.value] += 1
        [image] = to_ismrmrd_images([result], self.header, series_index=self.series_index, dtype=self.dtype,
                                    first_image_index=self._images_sent[result.role.value])
        self.counts["images_out"] += 1
        return image

    # -- summary -----------------------------------------------------------------------------------------------

    @property
    def noise_scans(self) -> int:
        return self._assembler.n_noise_scans if self._assembler is not None else len(self._pending_noise)

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self._assembler.skipped) if self._assembler is not None else {}

    def check_had_data(self) -> None:
        """ValueError when the stream ended without any imaging data (and nothing passed back)."""
        if self.counts["slices"] == 0 and self.counts["passed_back"] == 0:
            raise ValueError(f"the stream held no imaging data ({self.counts['acquisitions']} acquisitions, "
                             f"{self.noise_scans} noise scans, {sum(self.skipped.values())} skipped)")

    def summary(self) -> str:
        """The closing line for the client: images, slices, acquisitions, what was ignored or passed back."""
        skipped = ", ".join(f"{n} {what}" for what, n in sorted(self.skipped.items())) or "none"
        counts = self.counts
        return (f"mrdserve: done: {counts['images_out']} image(s) from {counts['slices']} slice(s); "
                f"{counts['acquisitions']} acquisitions ({self.noise_scans} noise scans, skipped: {skipped}), "
                f"{counts['waveforms']} waveforms ignored, {counts['passed_back']} images passed back, "
                f"{counts['arrays']} arrays ignored")
