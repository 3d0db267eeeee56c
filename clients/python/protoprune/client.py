"""The protoprune REST client: datasets, ingest, selections, exports, scores, jobs and manifests."""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Self, TypedDict, TypeVar, Unpack, cast

from ._transport import QueryValue, Transport, json_body, json_text, path, query_string
from ._vectors import FRAME_MEDIA_TYPE, Vector, frame, vector_bytes, vector_rows
from ._version import __version__
from .errors import ProtopruneError

DEFAULT_URL = "http://localhost:8080"
NDJSON = "application/x-ndjson"
JSON = "application/json"

Order = Literal["auto", "hardest", "easiest", "random", "stratified", "moderate", "hierarchical"]
Balance = Literal["none", "cluster"]
DedupKeep = Literal["farthest", "closest", "random", "highest", "lowest"]
# An image: the path of its file, or the file's bytes.
ImageSource = str | os.PathLike[str] | bytes
T = TypeVar("T")


class SelectionOptions(TypedDict, total=False):
    """The parameters of a selection (GET /v1/datasets/{dataset}/selection), in snake case.

    ``filter`` is a metadata filter as a dict (``{"contains": {...}, "where": [...]}``); the
    ``epsilon`` / ``dedup_*`` options go with ``dedup=True``.
    """

    order: Order
    fraction: float
    count: int
    balance: Balance
    seed: int
    outlier_fraction: float
    bins: int
    filter: Mapping[str, Any]
    dedup: bool
    epsilon: float
    dedup_job: str
    dedup_keep: DedupKeep
    dedup_keep_field: str


class ExportOptions(TypedDict, total=False):
    """The parameters of a score export (GET /v1/datasets/{dataset}/scores)."""

    filter: Mapping[str, Any]
    epsilon: float
    job: str


class Dataset(TypedDict):
    name: str
    dimension: int
    k: int | None
    model: dict[str, str] | None
    activeVersion: int | None
    settings: dict[str, Any]
    createdAt: str
    updatedAt: str


class ExportRow(TypedDict):
    """One line of a score export."""

    externalId: str
    score: float
    cluster: int
    percentile: float
    prototypeVersion: int
    duplicateOf: str | None
    duplicateSimilarity: float | None
    duplicateGroup: str | None
    metadata: dict[str, Any]


class DuplicateGroup(TypedDict):
    """A near-duplicate group of a SemDeDup run: the kept item and its duplicates, most similar first."""

    kept: str
    duplicates: list[str]
    similarities: list[float]


class ItemFailure(TypedDict):
    """An item an ingest could not store, with the server's code (``CORRUPT_IMAGE``, ``NON_FINITE_VALUE``, …)."""

    externalId: str
    code: str
    message: str


_SELECTION_QUERY_NAMES = {
    "order": "order",
    "fraction": "fraction",
    "count": "count",
    "balance": "balance",
    "seed": "seed",
    "outlier_fraction": "outlierFraction",
    "bins": "bins",
    "filter": "filter",
    "dedup": "dedup",
    "epsilon": "epsilon",
    "dedup_job": "dedupJob",
    "dedup_keep": "dedupKeep",
    "dedup_keep_field": "dedupKeepField",
}
_EXPORT_OPTIONS = ("filter", "epsilon", "job")
_DEDUP_OPTIONS = {"epsilon": "epsilon", "dedup_job": "jobId", "dedup_keep": "keep", "dedup_keep_field": "keepField"}


def _check_options(options: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")


def _selection_query(options: SelectionOptions) -> dict[str, Any]:
    """A selection's query parameters; ``filter`` as its JSON text."""
    _check_options(options, _SELECTION_QUERY_NAMES)
    return {_SELECTION_QUERY_NAMES[key]: json_text(value) if key == "filter" else value for key, value in options.items()}


def _manifest_selection(options: SelectionOptions) -> dict[str, Any]:
    """A selection as a manifest's JSON body takes it: ``filter`` an object, the dedup step one object."""
    _check_options(options, _SELECTION_QUERY_NAMES)
    dedup = {name: options[key] for key, name in _DEDUP_OPTIONS.items() if key in options}  # type: ignore[literal-required]
    if dedup and not options.get("dedup"):
        raise ValueError("epsilon, dedup_job, dedup_keep and dedup_keep_field go with dedup=True")
    body = {_SELECTION_QUERY_NAMES[key]: value for key, value in options.items() if key != "dedup" and key not in _DEDUP_OPTIONS}
    if options.get("dedup"):
        body["dedup"] = dedup
    return body


def path_id(item: str | os.PathLike[str]) -> str:
    """The external id ``ingest_images`` gives a bare path: a string as it is, another path in POSIX form."""
    return item if isinstance(item, str) else Path(item).as_posix()


def _image_bytes(source: ImageSource) -> bytes:
    return bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Stream(Generic[T]):
    """An NDJSON answer, read and parsed one line at a time as it is iterated (never whole).

    Iterate it once; it closes its connection at the end, on ``close()``, or on leaving a ``with``
    block. A connection that breaks mid-way raises ProtopruneError ``STREAM_INTERRUPTED``.
    """

    def __init__(self, response: http.client.HTTPResponse, parse: Callable[[Any], T]) -> None:
        self._response = response
        self._parse = parse
        self._closed = False

    @property
    def headers(self) -> http.client.HTTPMessage:
        return self._response.headers

    def _int_header(self, name: str) -> int | None:
        value = self._response.getheader(name)
        return None if value is None else int(value)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            line = self._response.readline()
        except (http.client.HTTPException, OSError) as error:
            self.close()
            raise ProtopruneError(None, "STREAM_INTERRUPTED", f"the answer broke off: {error!r}") from error
        if not line:
            self.close()
            raise StopIteration
        if not line.endswith(b"\n"):
            self.close()
            raise ProtopruneError(None, "STREAM_INTERRUPTED", "the answer ended inside a line")
        return self._parse(json.loads(line))

    def close(self) -> None:
        self._closed = True
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SelectionStream(Stream[str]):
    """The kept external ids of a selection, in policy order, with what the server reported about it."""

    @property
    def prototype_version(self) -> int:
        return int(self.headers["x-prototype-version"])

    @property
    def total(self) -> int:
        """Items in the dataset."""
        return int(self.headers["x-selection-total"])

    @property
    def matched(self) -> int:
        """Items matching the filter, which the budget applies to."""
        return int(self.headers["x-selection-matched"])

    @property
    def size(self) -> int:
        """Ids in the selection."""
        return int(self.headers["x-selection-size"])

    @property
    def policy(self) -> str:
        """The policy that ran, e.g. ``hardest`` or ``random+cluster`` (order=auto names its choice)."""
        return str(self.headers["x-selection-policy"])

    @property
    def imbalance(self) -> dict[str, Any] | None:
        """Per-cluster survival next to random sampling's (``survivalCv``, ``randomSurvivalCv``, …)."""
        value = self.headers.get("x-selection-imbalance")
        return None if value is None else json.loads(value)

    @property
    def dedup_job(self) -> str | None:
        """With ``dedup=True``: the dedup run whose groups were dropped."""
        return self.headers.get("x-dedup-job")

    @property
    def dedup_dropped(self) -> int | None:
        """With ``dedup=True``: near-duplicates dropped before the policy ran."""
        return self._int_header("x-selection-dedup-dropped")


class ExportStream(Stream[ExportRow]):
    """Every (matching) item's score row, easiest first."""

    @property
    def prototype_version(self) -> int:
        return int(self.headers["x-prototype-version"])

    @property
    def total(self) -> int:
        return int(self.headers["x-export-total"])

    @property
    def matched(self) -> int:
        return int(self.headers["x-export-matched"])

    @property
    def dedup_job(self) -> str | None:
        """The dedup run that filled the duplicate columns (None when none ran)."""
        return self.headers.get("x-dedup-job")


class ManifestIds(Stream[str]):
    """A manifest's external ids in their stored order."""

    @property
    def count(self) -> int:
        return int(self.headers["x-manifest-count"])

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of each id's UTF-8 bytes followed by a NUL byte, in order."""
        return str(self.headers["x-manifest-sha256"])


def _external_id(line: Any) -> str:
    return str(line["externalId"])


def _same(line: Any) -> Any:
    return line


@dataclass(frozen=True)
class SelectionPage:
    """One JSON page of a selection; ``next_cursor`` is None on the last."""

    external_ids: list[str]
    next_cursor: str | None
    prototype_version: int
    total: int
    matched: int
    size: int
    policy: dict[str, Any]
    imbalance: dict[str, Any] | None
    dedup: dict[str, Any] | None

    @classmethod
    def from_json(cls, page: Mapping[str, Any]) -> SelectionPage:
        return cls(
            external_ids=page["externalIds"],
            next_cursor=page["nextCursor"],
            prototype_version=page["prototypeVersion"],
            total=page["total"],
            matched=page["matched"],
            size=page["size"],
            policy=page["policy"],
            imbalance=page.get("imbalance"),
            dedup=page.get("dedup"),
        )


@dataclass
class IngestReport:
    """What an ingest stored, over all of its requests; ``errors`` lists every item that failed."""

    stored: int = 0
    updated: int = 0
    failed: int = 0
    errors: list[ItemFailure] = field(default_factory=list)
    prototype_version: int | None = None
    scheduled_job_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def _add(self, answer: Mapping[str, Any]) -> None:
        counts = answer["counts"]
        self.stored += counts["stored"]
        self.updated += counts["updated"]
        self.failed += counts["failed"]
        self.errors.extend(ItemFailure(externalId=i["externalId"], code=i["code"], message=i["message"]) for i in answer["items"] if i["status"] == "error")
        self.prototype_version = answer["prototypeVersion"]
        job = answer.get("scheduledJobId")
        if job is not None and job not in self.scheduled_job_ids:
            self.scheduled_job_ids.append(job)

    def _add_unread(self, external_id: str, error: OSError) -> None:
        """A file that could not be read: it fails alone and is never sent."""
        self.failed += 1
        self.errors.append(ItemFailure(externalId=external_id, code="READ_FAILED", message=str(error)))

    def _add_refused(self, items: Sequence[Mapping[str, Any]]) -> None:
        """A request refused whole because none of its items could be used: each failed alone."""
        self.failed += len(items)
        self.errors.extend(ItemFailure(externalId=i["externalId"], code=i["code"], message=i["message"]) for i in items)


class Job:
    """A background job (refit, dedup, ingest) as last seen; ``wait()`` follows it to its end."""

    def __init__(self, client: Client, body: Mapping[str, Any]) -> None:
        self._client = client
        self._update(body)

    def _update(self, body: Mapping[str, Any]) -> None:
        self.raw: dict[str, Any] = dict(body)
        self.id: str = body["id"]
        self.kind: str = body["kind"]
        self.dataset: str | None = body["dataset"]
        self.state: str = body["state"]
        self.phase: str | None = body["phase"]
        self.done: float = body["progress"]["done"]
        self.total: float = body["progress"]["total"]
        self.fraction: float = body["progress"]["fraction"]
        self.result: dict[str, Any] | None = body["result"]
        self.error: str | None = body["error"]

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    def refresh(self) -> Job:
        """Reads the job's current state (GET /v1/jobs/{id})."""
        self._update(self._client._transport.json("GET", path("jobs", self.id), idempotent=True))
        return self

    def wait(self, timeout: float | None = 600.0, *, poll_interval: float = 0.5, on_progress: Callable[[Job], None] | None = None) -> Job:
        """Polls until the job ends and returns it once it succeeded.

        ``on_progress(job)`` is called with the state first seen and after every poll (``phase``,
        ``done`` / ``total``, ``fraction``). A failed or cancelled job raises ProtopruneError
        ``JOB_FAILED`` / ``JOB_CANCELLED`` with its error; past ``timeout`` seconds (None: no limit)
        TimeoutError is raised and the job goes on on the server.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if on_progress is not None:
                on_progress(self)
            if self.finished:
                break
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"job {self.id} ({self.kind}) is still {self.state} after {timeout} s")
                time.sleep(min(poll_interval, remaining))
            else:
                time.sleep(poll_interval)
            self.refresh()
        if self.state != "succeeded":
            code = "JOB_FAILED" if self.state == "failed" else "JOB_CANCELLED"
            raise ProtopruneError(None, code, self.error or f"job {self.id} ({self.kind}) {self.state}", {"job": self.raw})
        return self

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, state={self.state!r}, phase={self.phase!r}, done={self.done}/{self.total})"


class Client:
    """A client of one protoprune server.

    ``url`` defaults to ``$PROTOPRUNE_URL`` (else ``http://localhost:8080``) and ``api_key`` to
    ``$PROTOPRUNE_API_KEY`` (none: for a server with ``AUTH_DISABLED=true``). ``timeout`` bounds each
    socket operation in seconds. Requests that may be sent twice (reads, ingest, score, refit and
    dedup requests, deletes) are retried on 429 and 503 after the server's ``Retry-After``, at most
    ``max_retries`` times and only while the hint is at most ``max_retry_wait`` seconds.
    Every refusal raises ProtopruneError.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_wait: float = 60.0,
    ) -> None:
        self.url = url or os.environ.get("PROTOPRUNE_URL") or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get("PROTOPRUNE_API_KEY")
        self._transport = Transport(self.url, key, timeout, max_retries, max_retry_wait, f"protoprune-python/{__version__}")

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def _get(self, target: str) -> Any:
        return self._transport.json("GET", target, idempotent=True)

    def _post_json(self, target: str, body: Any, *, idempotent: bool) -> Any:
        return self._transport.json("POST", target, body=json_body(body), content_type=JSON, idempotent=idempotent)

    def _ndjson(self, target: str) -> http.client.HTTPResponse:
        return self._transport.open("GET", target, accept=NDJSON, idempotent=True)

    # Datasets

    def create_dataset(self, name: str, *, dimension: int | None = None, k: int | None = None, settings: Mapping[str, Any] | None = None) -> Dataset:
        """A new dataset: of ``dimension`` for precomputed embeddings, or without one for images embedded by the server's encoder."""
        body = {"name": name, "dimension": dimension, "k": k, "settings": settings}
        return cast(Dataset, self._post_json(path("datasets"), {key: value for key, value in body.items() if value is not None}, idempotent=False))

    def list_datasets(self) -> list[Dataset]:
        """The datasets this key may read."""
        return cast(list[Dataset], self._get(path("datasets"))["datasets"])

    def get_dataset(self, name: str) -> Dataset:
        return cast(Dataset, self._get(path("datasets", name)))

    def delete_dataset(self, name: str) -> None:
        """Deletes the dataset with its items, scores, prototypes, jobs and manifests."""
        self._transport.json("DELETE", path("datasets", name), idempotent=True)

    def stats(self, dataset: str, *, filter: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Item and scored counts, score histogram, cluster sizes, prototype version, drift, ingest activity."""
        query = {"filter": None if filter is None else json_text(filter)}
        return cast(dict[str, Any], self._get(path("datasets", dataset, "stats") + query_string(query)))

    def prototypes(self, dataset: str) -> dict[str, Any]:
        """Prototype version, k, cluster sizes, drift since the last full fit, and the refit in progress."""
        return cast(dict[str, Any], self._get(path("datasets", dataset, "prototypes")))

    # Items

    def ingest_images(
        self,
        dataset: str,
        images: Mapping[str, ImageSource] | Iterable[str | os.PathLike[str]],
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        batch_size: int = 32,
        batch_bytes: int = 16 << 20,
        on_batch: Callable[[IngestReport], None] | None = None,
    ) -> IngestReport:
        """Stores image files (JPEG, PNG, WebP, GIF, TIFF) in batches; the server embeds them.

        ``images`` maps external ids to files (paths or bytes), or is an iterable of paths whose
        ids are the paths themselves (``path_id``: a string as given, a Path in POSIX form).
        ``metadata`` maps external ids to metadata objects. A request holds at most ``batch_size``
        images and about ``batch_bytes`` of base64 (keep it under the server's BODY_LIMIT_BYTES and
        MAX_ITEMS_PER_REQUEST); files are read one batch at a time. Each image fails alone (its code
        in the report's ``errors``; ``READ_FAILED`` for a file that cannot be read, which is not
        sent); ``on_batch(report)`` is called after every request.
        Re-sending an id replaces the item, so an interrupted ingest can simply be run again.
        """
        pairs = images.items() if isinstance(images, Mapping) else ((path_id(image), image) for image in images)
        report = IngestReport()
        batch: list[dict[str, Any]] = []
        size = 0
        for external_id, source in pairs:
            try:
                encoded = _base64(_image_bytes(source))
            except OSError as error:
                report._add_unread(external_id, error)
                continue
            if batch and (len(batch) >= batch_size or size + len(encoded) > batch_bytes):
                self._ingest_batch(dataset, json_body({"items": batch}), JSON, report, on_batch)
                batch, size = [], 0
            item: dict[str, Any] = {"externalId": external_id, "image": encoded}
            if metadata is not None and external_id in metadata:
                item["metadata"] = metadata[external_id]
            batch.append(item)
            size += len(encoded)
        if batch:
            self._ingest_batch(dataset, json_body({"items": batch}), JSON, report, on_batch)
        return report

    def ingest_embeddings(
        self,
        dataset: str,
        ids: Sequence[str],
        vectors: Vector | Sequence[Vector],
        *,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        batch_bytes: int = 8 << 20,
        on_batch: Callable[[IngestReport], None] | None = None,
    ) -> IngestReport:
        """Stores precomputed embeddings through the binary ingest path (little-endian float32 frames).

        ``vectors`` is one buffer of ``len(ids) × dimension`` float32 values — ``array('f')``, bytes
        of little-endian float32, a memoryview, a C-contiguous numpy float32/float64 array — or a
        sequence of vectors, each such a buffer or a sequence of floats. ``metadata`` maps external
        ids to metadata objects. Requests carry about ``batch_bytes`` each; each item fails alone
        (NaN, zero vector, … in the report's ``errors``); ``on_batch(report)`` follows every request.
        """
        dim = self.get_dataset(dataset)["dimension"]
        report = IngestReport()
        batch: list[tuple[bytes, bytes, bytes]] = []
        size = 16
        for external_id, row in zip(ids, vector_rows(vectors, len(ids), dim), strict=True):
            encoded_id = external_id.encode("utf-8")
            encoded_metadata = json_body(metadata[external_id]) if metadata is not None and external_id in metadata else b""
            item_size = 6 + len(encoded_id) + len(row) + len(encoded_metadata)
            if batch and size + item_size > batch_bytes:
                self._ingest_batch(dataset, frame(dim, batch), FRAME_MEDIA_TYPE, report, on_batch)
                batch, size = [], 16
            batch.append((encoded_id, row, encoded_metadata))
            size += item_size
        if batch:
            self._ingest_batch(dataset, frame(dim, batch), FRAME_MEDIA_TYPE, report, on_batch)
        return report

    def _ingest_batch(self, dataset: str, body: bytes, content_type: str, report: IngestReport, on_batch: Callable[[IngestReport], None] | None) -> None:
        target = path("datasets", dataset, "items") + query_string({"results": "errors"})
        try:
            report._add(self._transport.json("POST", target, body=body, content_type=content_type, idempotent=True))
        except ProtopruneError as error:
            items = error.details.get("items")
            if error.status != 400 or not isinstance(items, list):
                raise
            report._add_refused(items)
        if on_batch is not None:
            on_batch(report)

    def get_item(self, dataset: str, external_id: str) -> dict[str, Any]:
        """An item's score, cluster, prototype version and metadata."""
        return cast(dict[str, Any], self._get(path("datasets", dataset, "items", external_id)))

    def delete_item(self, dataset: str, external_id: str) -> None:
        self._transport.json("DELETE", path("datasets", dataset, "items", external_id), idempotent=True)

    # Selections, exports, scores

    def select(self, dataset: str, **options: Unpack[SelectionOptions]) -> SelectionStream:
        """The whole selection streamed as NDJSON, one external id per line in policy order.

        Options are those of SelectionOptions: ``order`` (default auto), ``fraction`` or ``count``,
        ``balance``, ``seed``, ``outlier_fraction``, ``bins``, ``filter`` (a dict), and
        ``dedup=True`` with ``epsilon``, ``dedup_job``, ``dedup_keep``, ``dedup_keep_field``.
        """
        target = path("datasets", dataset, "selection") + query_string({**_selection_query(options), "format": "ndjson"})
        return SelectionStream(self._ndjson(target), _external_id)

    def select_pages(
        self, dataset: str, *, limit: int | None = None, cursor: str | None = None, **options: Unpack[SelectionOptions]
    ) -> Iterator[SelectionPage]:
        """The selection as JSON pages of ``limit`` ids, following ``nextCursor`` to the last page.

        The pages together are exactly the selection the first page computed, whatever is ingested
        or refitted meanwhile. ``cursor`` resumes from a page's ``next_cursor`` (with the same options).
        """
        query = _selection_query(options)
        while True:
            page = SelectionPage.from_json(self._get(path("datasets", dataset, "selection") + query_string({**query, "limit": limit, "cursor": cursor})))
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def export(self, dataset: str, **options: Unpack[ExportOptions]) -> ExportStream:
        """Every item's score row under the active version, easiest first, streamed as NDJSON.

        ``filter`` keeps the matching items only; ``epsilon`` or ``job`` pick the dedup run whose
        groups fill ``duplicateOf`` / ``duplicateSimilarity`` / ``duplicateGroup``.
        """
        _check_options(options, _EXPORT_OPTIONS)
        chosen = options.get("filter")
        query: dict[str, QueryValue] = {
            "filter": None if chosen is None else json_text(chosen),
            "epsilon": options.get("epsilon"),
            "job": options.get("job"),
            "format": "ndjson",
        }
        return ExportStream(self._ndjson(path("datasets", dataset, "scores") + query_string(query)), _same)

    def score(
        self,
        dataset: str,
        *,
        images: Mapping[str, ImageSource] | None = None,
        embeddings: Mapping[str, Vector] | None = None,
        order: Order | None = None,
        fraction: float | None = None,
        balance: Balance | None = None,
        seed: int | None = None,
        epsilon: float | None = None,
        outlier_fraction: float | None = None,
        bins: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Scores new images and/or embeddings (by external id) without storing them: should we annotate these?

        Each answer item has ``score``, ``cluster``, ``percentile``, the ``nearest`` stored item, a
        ``duplicate`` flag and a ``decision`` (keep / skip) under the policy (default hardest 30%).
        One call carries at most the server's MAX_ITEMS_PER_REQUEST items.
        """
        items = [{"externalId": external_id, "image": _base64(_image_bytes(source))} for external_id, source in (images or {}).items()]
        items += [{"externalId": external_id, "embedding": _base64(vector_bytes(vector))} for external_id, vector in (embeddings or {}).items()]
        policy = {
            "order": order,
            "fraction": fraction,
            "balance": balance,
            "seed": seed,
            "epsilon": epsilon,
            "outlierFraction": outlier_fraction,
            "bins": bins,
            "filter": filter,
        }
        body: dict[str, Any] = {"items": items}
        chosen = {name: value for name, value in policy.items() if value is not None}
        if chosen:
            body["policy"] = chosen
        return cast(dict[str, Any], self._post_json(path("datasets", dataset, "score"), body, idempotent=True))

    # Jobs

    def refit(self, dataset: str) -> Job:
        """Requests a full refit (asking again while one is queued or running gives the same job)."""
        return Job(self, self._transport.json("POST", path("datasets", dataset, "prototypes", "refit"), idempotent=True))

    def dedup(self, dataset: str, *, epsilon: float | None = None) -> Job:
        """Requests a SemDeDup run of the active prototype version at ``epsilon`` (default the dataset's)."""
        body = {} if epsilon is None else {"epsilon": epsilon}
        return Job(self, self._post_json(path("datasets", dataset, "duplicates", "jobs"), body, idempotent=True))

    def job(self, job_id: str) -> Job:
        return Job(self, self._get(path("jobs", job_id)))

    def duplicates(self, dataset: str, *, epsilon: float | None = None, job: str | None = None) -> Stream[DuplicateGroup]:
        """The groups of the newest completed dedup run at ``epsilon`` (or of ``job``), streamed one per line."""
        target = path("datasets", dataset, "duplicates") + query_string({"epsilon": epsilon, "job": job, "format": "ndjson"})
        return Stream(self._ndjson(target), _same)

    # Manifests

    def create_manifest(
        self,
        dataset: str,
        *,
        selection: SelectionOptions | None = None,
        export: ExportOptions | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Saves a selection's (or a score export's) ordered ids as a manifest, fetched unchanged later.

        Give exactly one of ``selection`` (the options of ``select``) and ``export`` (those of
        ``export``). The answer holds the manifest's ``id``, ``count``, ``sha256``, prototype version,
        parameters and summary.
        """
        body: dict[str, Any] = {}
        if selection is not None:
            body["selection"] = _manifest_selection(selection)
        if export is not None:
            _check_options(export, _EXPORT_OPTIONS)
            body["export"] = dict(export)
        if name is not None:
            body["name"] = name
        if description is not None:
            body["description"] = description
        return cast(dict[str, Any], self._post_json(path("datasets", dataset, "manifests"), body, idempotent=False))

    def get_manifest(self, manifest_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(path("manifests", manifest_id)))

    def manifest_ids(self, manifest_id: str) -> ManifestIds:
        """A manifest's external ids in their stored order, streamed as NDJSON."""
        return ManifestIds(self._ndjson(path("manifests", manifest_id) + query_string({"format": "ndjson"})), _external_id)

    def delete_manifest(self, manifest_id: str) -> None:
        self._transport.json("DELETE", path("manifests", manifest_id), idempotent=True)
