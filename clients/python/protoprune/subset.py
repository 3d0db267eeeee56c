"""``Subset``: the kept external ids of a selection, for a training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, Unpack, overload

from .client import Client, SelectionOptions, path_id

T = TypeVar("T")


class Subset(Sequence[str]):
    """The external ids a selection keeps, fetched once (streamed) and held in memory, in policy order.

    Example, the hardest 30% of dataset "photos"::

        client = protoprune.Client()  # PROTOPRUNE_URL, PROTOPRUNE_API_KEY
        hardest = protoprune.Subset(client, "photos", order="hardest", fraction=0.3)
        print(len(hardest), "cat-001.jpg" in hardest)
        kept_paths = hardest.filter(all_paths)  # the paths ingest_images stored under kept ids

    The options are those of ``Client.select`` (``order``, ``fraction`` / ``count``, ``balance``,
    ``seed``, ``filter``, ``dedup``, …). ``in`` is a set lookup; indexing and slicing follow the
    policy order, so the subset also serves as a map-style dataset's index.
    """

    def __init__(self, client: Client, dataset: str, **options: Unpack[SelectionOptions]) -> None:
        with client.select(dataset, **options) as stream:
            self.ids: tuple[str, ...] = tuple(stream)
            self.dataset = dataset
            self.prototype_version = stream.prototype_version
            self.policy = stream.policy
            self.total = stream.total
            self.matched = stream.matched
        self._kept = frozenset(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._kept

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self.ids[index]

    def filter(self, items: Iterable[T], key: Callable[[T], str] | None = None) -> list[T]:
        """The items whose external id is kept, in their own order.

        ``key`` gives an item's external id; without it an item is an id or a path, named as
        ``ingest_images`` names bare paths (a string as it is, a Path in POSIX form).
        """
        id_of: Callable[[Any], str] = key if key is not None else path_id
        return [item for item in items if id_of(item) in self._kept]

    def __repr__(self) -> str:
        return f"Subset(dataset={self.dataset!r}, policy={self.policy!r}, size={len(self.ids)}, of={self.matched}, prototype_version={self.prototype_version})"
