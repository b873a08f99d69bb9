"""The next sub-operation's C-STORE-RQ, prepared while the peer answers this one.

A retrieve is a ping-pong: we write an instance, the receiver reads it, writes its file and
answers; only then does the next one go out (neither DCMTK's storescp nor getscu negotiates
asynchronous operations). Whatever we do between reading a C-STORE-RSP and writing the next
C-STORE-RQ (open the file, walk its meta, read its first batch) is on that critical path, and
the receiver idles through it. :class:`Lookahead` does that work for instance N+1 after the last
byte of N is written and before N's response is awaited, so the next write follows the
response at once.

What preparing cannot do (a missing or shrunken file, no accepted context, a failed
transcoding) is kept and raised when that instance's turn comes, as before: one failed
sub-operation, nothing of it on the wire. One batch buffer serves the whole run: the next
instance is staged into it only once the current one is written. :meth:`Lookahead.close`
closes a staged file that is never sent (cancel, lost association).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from pacsnode.dimse.sending import WIRE_BATCH, CannotSend, PreparedStore
from pacsnode.model import InstanceLocation


class StagedStore:
    """A :class:`PreparedStore` whose first batch (the command and the first PDUs) is laid out.

    Laying it out reads the file: :class:`CannotSend` from here means nothing was sent. Only
    the batches after the first can still fail mid-message (the file changed under us).
    """

    def __init__(self, prepared: PreparedStore, buffer: bytearray, message_id: int,
                 location: InstanceLocation) -> None:
        self.prepared, self.message_id, self.location = prepared, message_id, location
        self._rest = prepared.batches(buffer)
        try:
            self._first: memoryview | None = next(self._rest)
        except BaseException:
            prepared.close()
            raise

    def batches(self) -> Iterator[memoryview]:
        """Every batch, the staged first one included (a view is valid until the next is asked for)."""
        first, self._first = self._first, None
        if first is not None:
            yield first
        yield from self._rest

    def close(self) -> None:
        self._rest.close()
        self.prepared.close()

    def __enter__(self) -> "StagedStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Stage = Callable[[InstanceLocation, bytearray], StagedStore]  # raises CannotSend


class Lookahead:
    """Stages ``locations`` one ahead of the sender, in the order given.

    ``take(location)`` hands over that location's staged store (staging it now when it was not
    staged ahead) or raises the :class:`CannotSend` its staging raised; ``prefetch()`` stages
    the location after the one last taken. Out-of-order takes are served, without lookahead.
    """

    def __init__(self, locations: Sequence[InstanceLocation], stage: Stage) -> None:
        self._locations, self._stage = locations, stage
        self._buffer = bytearray(WIRE_BATCH)  # staged into only once the store taken before is written
        self._index = 0  # the position of the next location to be taken
        self._ahead: StagedStore | CannotSend | None = None  # what staging locations[_index] gave

    def take(self, location: InstanceLocation) -> StagedStore:
        ahead, self._ahead = self._ahead, None
        if self._index >= len(self._locations) or self._locations[self._index] is not location:
            if isinstance(ahead, StagedStore):  # asked out of order: what was staged is not this one
                ahead.close()
            ahead = None
            self._index = next((i for i, loc in enumerate(self._locations) if loc is location),
                               len(self._locations) - 1)
        self._index += 1
        if ahead is None:
            ahead = self._staged(location)
        if isinstance(ahead, CannotSend):
            raise ahead
        return ahead

    def prefetch(self) -> None:
        """Stage the next location: call it only once the store taken last is wholly written
        (its batches are views of the same buffer)."""
        if self._ahead is None and self._index < len(self._locations):
            self._ahead = self._staged(self._locations[self._index])

    def _staged(self, location: InstanceLocation) -> StagedStore | CannotSend:
        try:
            return self._stage(location, self._buffer)
        except CannotSend as exc:
            return exc

    def close(self) -> None:
        """Close what is staged and was never taken."""
        ahead, self._ahead = self._ahead, None
        if isinstance(ahead, StagedStore):
            ahead.close()
