"""Tests of the Python client.

LiveImagesTest and LiveEmbeddingsTest run against the server at PROTOPRUNE_URL with the admin key in
PROTOPRUNE_API_KEY (test/clients/python-client.test.ts starts one); without PROTOPRUNE_URL they fail.
RetryTest runs against a stub server of its own.
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import math
import os
import random
import struct
import tempfile
import threading
import unittest
import uuid
import zlib
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import protoprune
from protoprune import Client, IngestReport, Job, ProtopruneError, Subset, path_id

SIDE = 64
FAMILIES = 4
PER_FAMILY = 6


def png(width: int, height: int, rgb: bytes) -> bytes:
    """A truecolour 8-bit PNG of raw RGB rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + rgb[y * width * 3 : (y + 1) * width * 3] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def scene(family: int, seed: int) -> bytes:
    """A distinct image of one of four families (horizontal stripes, vertical stripes, checks, rings)."""
    rng = random.Random(seed)
    period = rng.randint(6, 14)
    phase = rng.randint(0, period)
    base = [(200, 40, 40), (40, 160, 60), (50, 70, 210), (220, 200, 40)][family]
    ink = [min(255, max(0, c + rng.randint(-40, 40))) for c in base]
    paper = [rng.randint(200, 255), rng.randint(200, 255), rng.randint(200, 255)]
    pattern: Callable[[int, int], bool] = [
        lambda x, y: (y + phase) // period % 2 == 0,
        lambda x, y: (x + phase) // period % 2 == 0,
        lambda x, y: ((x + phase) // period + (y + phase) // period) % 2 == 0,
        lambda x, y: int(math.hypot(x - SIDE / 2, y - SIDE / 2) + phase) // period % 2 == 0,
    ][family]
    out = bytearray()
    for y in range(SIDE):
        for x in range(SIDE):
            colour = ink if pattern(x, y) else paper
            out += bytes(min(255, max(0, c + rng.randint(-12, 12))) for c in colour)
    return png(SIDE, SIDE, bytes(out))


def live_client() -> Client:
    if not os.environ.get("PROTOPRUNE_URL"):
        raise RuntimeError("set PROTOPRUNE_URL (and PROTOPRUNE_API_KEY) to a running protoprune server: test/clients/python-client.test.ts does")
    return Client()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class LiveImagesTest(unittest.TestCase):
    """Image ingest from files, refit, selections, Subset, export, score and errors."""

    client: ClassVar[Client]
    dataset: ClassVar[str]
    paths: ClassVar[list[Path]]
    family: ClassVar[dict[str, int]]
    report: ClassVar[IngestReport]
    broken: ClassVar[IngestReport]
    batches: ClassVar[list[int]]
    refit: ClassVar[Job]
    seen: ClassVar[list[tuple[str, str | None]]]
    folder: ClassVar[tempfile.TemporaryDirectory[str]]

    @classmethod
    def setUpClass(cls) -> None:
        cls.client = live_client()
        cls.dataset = unique("py-images")
        cls.client.create_dataset(cls.dataset)
        cls.folder = tempfile.TemporaryDirectory()
        cls.paths, cls.family = [], {}
        for family in range(FAMILIES):
            for i in range(PER_FAMILY):
                file = Path(cls.folder.name) / f"family-{family}" / f"img-{i}.png"
                file.parent.mkdir(exist_ok=True)
                file.write_bytes(scene(family, 100 * family + i))
                cls.paths.append(file)
                cls.family[path_id(file)] = family
        cls.batches = []
        metadata = {external_id: {"family": family} for external_id, family in cls.family.items()}
        cls.report = cls.client.ingest_images(cls.dataset, cls.paths, metadata=metadata, batch_size=8, on_batch=lambda r: cls.batches.append(r.stored))
        cls.broken = cls.client.ingest_images(cls.dataset, {"broken.png": b"not an image", "also-broken.png": b"\x89PNG\r\n\x1a\n"})
        missing = Path(cls.folder.name) / "missing.png"
        cls.unread = cls.client.ingest_images(cls.dataset, [cls.paths[0], missing], metadata={path_id(cls.paths[0]): {"family": 0}})
        cls.seen = []
        cls.refit = cls.client.refit(cls.dataset).wait(timeout=300, poll_interval=0.1, on_progress=lambda job: cls.seen.append((job.state, job.phase)))

    @classmethod
    def tearDownClass(cls) -> None:
        cls.folder.cleanup()

    def test_ingests_image_files_in_batches_with_metadata(self) -> None:
        n = FAMILIES * PER_FAMILY
        self.assertEqual((self.report.stored, self.report.updated, self.report.failed), (n, 0, 0))
        self.assertTrue(self.report.ok)
        self.assertEqual(self.batches, [8, 16, 24])
        item = self.client.get_item(self.dataset, path_id(self.paths[7]))
        self.assertEqual(item["metadata"], {"family": 1})
        self.assertEqual(item["externalId"], self.paths[7].as_posix())

    def test_a_batch_none_of_whose_images_could_be_used_reports_each_failure(self) -> None:
        self.assertEqual((self.broken.stored, self.broken.failed), (0, 2))
        self.assertFalse(self.broken.ok)
        self.assertEqual(sorted(e["externalId"] for e in self.broken.errors), ["also-broken.png", "broken.png"])
        self.assertTrue(all(e["code"] for e in self.broken.errors))

    def test_a_file_that_cannot_be_read_fails_alone(self) -> None:
        self.assertEqual((self.unread.stored, self.unread.updated, self.unread.failed), (0, 1, 1))
        [error] = self.unread.errors
        self.assertEqual(error["code"], "READ_FAILED")
        self.assertTrue(error["externalId"].endswith("missing.png"))
        self.assertIn("No such file", error["message"])

    def test_refit_waits_for_the_job_and_reports_progress(self) -> None:
        self.assertEqual(self.refit.state, "succeeded")
        self.assertEqual(self.refit.kind, "refit")
        self.assertEqual(self.seen[-1][0], "succeeded")
        self.assertGreaterEqual(len(self.seen), 2)
        prototypes = self.client.prototypes(self.dataset)
        self.assertGreaterEqual(prototypes["version"], 1)
        stats = self.client.stats(self.dataset)
        self.assertEqual((stats["itemCount"], stats["scoredCount"]), (FAMILIES * PER_FAMILY, FAMILIES * PER_FAMILY))
        self.assertEqual(self.client.stats(self.dataset, filter={"contains": {"family": 2}})["matched"], PER_FAMILY)

    def test_subset_keeps_the_hardest_30_percent(self) -> None:
        n = FAMILIES * PER_FAMILY
        hardest = Subset(self.client, self.dataset, order="hardest", fraction=0.3)
        self.assertEqual(len(hardest), round(0.3 * n))
        self.assertEqual((hardest.policy, hardest.total, hardest.matched), ("hardest", n, n))
        with self.client.export(self.dataset) as rows:
            ranked = sorted(rows, key=lambda r: (-r["score"], r["externalId"].encode()))
        self.assertEqual(list(hardest), [r["externalId"] for r in ranked[: len(hardest)]])
        self.assertIn(hardest[0], hardest)
        self.assertNotIn(ranked[-1]["externalId"], hardest)
        kept = hardest.filter(self.paths)
        self.assertEqual(sorted(path_id(p) for p in kept), sorted(hardest))
        self.assertEqual(hardest.prototype_version, self.client.prototypes(self.dataset)["version"])

    def test_subset_of_a_metadata_filter(self) -> None:
        family = Subset(self.client, self.dataset, order="easiest", fraction=0.5, filter={"contains": {"family": 3}})
        self.assertEqual((family.matched, len(family)), (PER_FAMILY, PER_FAMILY // 2))
        self.assertTrue(all(self.family[external_id] == 3 for external_id in family))

    def test_select_streams_what_the_cursor_pages_hold(self) -> None:
        with self.client.select(self.dataset, order="random", seed=7, count=10) as stream:
            self.assertEqual((stream.size, stream.policy), (10, "random"))
            self.assertIsNotNone(stream.imbalance)
            streamed = list(stream)
        pages = list(self.client.select_pages(self.dataset, order="random", seed=7, count=10, limit=4))
        self.assertEqual([len(p.external_ids) for p in pages], [4, 4, 2])
        self.assertEqual([i for p in pages for i in p.external_ids], streamed)
        self.assertIsNone(pages[-1].next_cursor)
        resumed = list(self.client.select_pages(self.dataset, order="random", seed=7, count=10, limit=4, cursor=pages[0].next_cursor))
        self.assertEqual([i for p in resumed for i in p.external_ids], streamed[4:])
        auto = self.client.select(self.dataset, fraction=0.5)
        self.assertEqual(len(list(auto)), FAMILIES * PER_FAMILY // 2)

    def test_export_streams_rows_easiest_first(self) -> None:
        rows = self.client.export(self.dataset)
        self.assertEqual((rows.total, rows.matched), (FAMILIES * PER_FAMILY, FAMILIES * PER_FAMILY))
        first = next(rows)
        self.assertEqual(
            set(first), {"externalId", "score", "cluster", "percentile", "prototypeVersion", "duplicateOf", "duplicateSimilarity", "duplicateGroup", "metadata"}
        )
        rest = list(rows)
        scores = [first["score"]] + [r["score"] for r in rest]
        self.assertEqual(scores, sorted(scores))
        self.assertEqual(len(scores), FAMILIES * PER_FAMILY)
        self.assertEqual(list(rows), [])  # exhausted and closed
        filtered = list(self.client.export(self.dataset, filter={"where": [{"field": "family", "op": "in", "value": [0, 1]}]}))
        self.assertEqual(len(filtered), 2 * PER_FAMILY)
        early = self.client.export(self.dataset)
        self.assertEqual(len(list(itertools.islice(early, 3))), 3)
        early.close()

    def test_score_decides_on_new_images(self) -> None:
        answer = self.client.score(self.dataset, images={"new-0": scene(0, 9000), "new-1": scene(2, 9001)}, order="hardest", fraction=0.3)
        self.assertEqual([i["externalId"] for i in answer["items"]], ["new-0", "new-1"])
        for item in answer["items"]:
            self.assertEqual(item["status"], "scored")
            self.assertIn(item["decision"], ("keep", "skip"))
            self.assertIsNotNone(item["nearest"])
        self.assertEqual(answer["policy"]["order"], "hardest")

    def test_refusals_raise_protoprune_error_with_the_server_code(self) -> None:
        with self.assertRaises(ProtopruneError) as missing:
            self.client.get_dataset(unique("no-such-dataset"))
        self.assertEqual((missing.exception.status, missing.exception.code), (404, "DATASET_NOT_FOUND"))
        self.assertIsNone(missing.exception.retry_after)
        self.assertTrue(missing.exception.message)
        with self.assertRaises(ProtopruneError) as stream_missing:
            self.client.select(unique("no-such-dataset"), fraction=0.1)
        self.assertEqual(stream_missing.exception.code, "DATASET_NOT_FOUND")
        with self.assertRaises(ProtopruneError) as bad:
            list(self.client.select(self.dataset, order="hardest", fraction=0.3, balance="sideways"))  # type: ignore[arg-type]
        self.assertEqual((bad.exception.status, bad.exception.details.get("field")), (400, "querystring/balance"))
        with self.assertRaises(ProtopruneError) as key:
            Client(self.client.url, api_key="pp_not-a-key").list_datasets()
        self.assertEqual((key.exception.status, key.exception.code), (401, "INVALID_API_KEY"))
        with self.assertRaises(ProtopruneError) as exists:
            self.client.create_dataset(self.dataset)
        self.assertEqual((exists.exception.status, exists.exception.code), (409, "DATASET_EXISTS"))
        with self.assertRaises(TypeError):
            self.client.select(self.dataset, fractoin=0.3)  # type: ignore[call-arg]
        with self.assertRaises(ProtopruneError) as job:
            self.client.job("00000000-0000-0000-0000-000000000000")
        self.assertEqual(job.exception.status, 404)

    def test_datasets_are_listed_and_deleted(self) -> None:
        name = unique("py-scratch")
        created = self.client.create_dataset(name, dimension=4, settings={"minItemsForFit": 10})
        self.assertEqual((created["dimension"], created["model"]), (4, None))
        self.assertIn(name, [d["name"] for d in self.client.list_datasets()])
        self.assertEqual(self.client.get_dataset(name)["settings"]["minItemsForFit"], 10)
        self.client.delete_dataset(name)
        self.assertNotIn(name, [d["name"] for d in self.client.list_datasets()])


DIM = 8


def planted(n: int, seed: int) -> list[list[float]]:
    """``n`` vectors around four directions."""
    rng = random.Random(seed)
    centres = [[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(4)]
    return [[c + rng.gauss(0, 0.15) for c in centres[i % 4]] for i in range(n)]


class LiveEmbeddingsTest(unittest.TestCase):
    """Precomputed embeddings through the binary frames, from every vector form the client takes."""

    client: ClassVar[Client]
    dataset: ClassVar[str]
    vectors: ClassVar[list[list[float]]]
    ids: ClassVar[list[str]]
    reports: ClassVar[dict[str, IngestReport]]
    requests: ClassVar[int]

    @classmethod
    def setUpClass(cls) -> None:
        cls.client = live_client()
        cls.dataset = unique("py-embeddings")
        cls.client.create_dataset(cls.dataset, dimension=DIM, settings={"minItemsForFit": 100000})
        cls.vectors = planted(50, 11)
        cls.ids = [f"vec-{i:03d}" for i in range(50)]
        flat = array("f", [x for v in cls.vectors[0:10] for x in v])
        raw = array("f", [x for v in cls.vectors[30:40] for x in v]).tobytes()
        calls: list[int] = []
        cls.reports = {
            "array": cls.client.ingest_embeddings(
                cls.dataset, cls.ids[0:10], flat, metadata={cls.ids[3]: {"form": "array"}}, batch_bytes=200, on_batch=lambda r: calls.append(r.stored)
            ),
            "bytes": cls.client.ingest_embeddings(cls.dataset, cls.ids[10:20], array("f", [x for v in cls.vectors[10:20] for x in v]).tobytes()),
            "floats": cls.client.ingest_embeddings(cls.dataset, cls.ids[20:30], cls.vectors[20:30]),
            "memoryview": cls.client.ingest_embeddings(cls.dataset, cls.ids[30:40], memoryview(raw).cast("f", [10, DIM])),
            "per-item buffers": cls.client.ingest_embeddings(
                cls.dataset, cls.ids[40:50], [array("d", v) if i % 2 else array("f", v) for i, v in enumerate(cls.vectors[40:50])]
            ),
            "twins": cls.client.ingest_embeddings(cls.dataset, ["twin-a", "twin-b"], [planted(1, 99)[0]] * 2),
        }
        cls.requests = len(calls)
        cls.client.refit(cls.dataset).wait(timeout=300, poll_interval=0.1)

    def test_every_vector_form_is_stored(self) -> None:
        for form, report in self.reports.items():
            with self.subTest(form=form):
                self.assertEqual(report.failed, 0, report.errors)
        self.assertEqual(sum(r.stored for r in self.reports.values()), 52)
        self.assertGreater(self.requests, 1)  # batch_bytes split the first ingest
        self.assertEqual(self.client.get_item(self.dataset, self.ids[3])["metadata"], {"form": "array"})
        self.assertEqual(self.client.stats(self.dataset)["itemCount"], 52)

    def test_stored_vectors_are_the_ones_sent(self) -> None:
        for i in (3, 14, 25, 36, 41, 42):
            with self.subTest(item=self.ids[i]):
                answer = self.client.score(self.dataset, embeddings={"probe": array("f", self.vectors[i])})
                [probe] = answer["items"]
                self.assertEqual(probe["nearest"]["externalId"], self.ids[i])
                self.assertGreater(probe["nearest"]["similarity"], 0.99999)
                self.assertTrue(probe["duplicate"])

    def test_item_problems_fail_alone_and_a_wholly_bad_batch_is_reported(self) -> None:
        mixed = self.client.ingest_embeddings(self.dataset, ["fine", "nan"], [self.vectors[0], [math.nan] * DIM])
        self.assertEqual((mixed.stored, mixed.failed), (1, 1))
        self.assertEqual([(e["externalId"], e["code"]) for e in mixed.errors], [("nan", "NON_FINITE_VALUE")])
        refused = self.client.ingest_embeddings(self.dataset, ["zero"], [[0.0] * DIM])
        self.assertEqual((refused.stored, refused.failed, refused.errors[0]["code"]), (0, 1, "ZERO_VECTOR"))
        again = self.client.ingest_embeddings(self.dataset, ["fine"], [self.vectors[1]])
        self.assertEqual((again.stored, again.updated), (0, 1))
        with self.assertRaises(ValueError):
            self.client.ingest_embeddings(self.dataset, ["short"], [[1.0, 2.0]])
        with self.assertRaises(ValueError):
            self.client.ingest_embeddings(self.dataset, ["a", "b"], array("f", [1.0] * DIM))
        with self.assertRaises(TypeError):
            self.client.ingest_embeddings(self.dataset, ["ints"], array("i", [1] * DIM))
        self.client.delete_item(self.dataset, "fine")
        with self.assertRaises(ProtopruneError) as gone:
            self.client.get_item(self.dataset, "fine")
        self.assertEqual(gone.exception.code, "ITEM_NOT_FOUND")

    def test_dedup_job_then_dedup_selection_and_manifest(self) -> None:
        job = self.client.dedup(self.dataset, epsilon=0.0001).wait(timeout=300, poll_interval=0.1)
        self.assertEqual((job.kind, job.state), ("dedup", "succeeded"))
        groups = list(self.client.duplicates(self.dataset, epsilon=0.0001))
        twins = [g for g in groups if {g["kept"], *g["duplicates"]} == {"twin-a", "twin-b"}]
        self.assertEqual(len(twins), 1, groups)
        with self.client.select(self.dataset, order="hardest", fraction=1.0, dedup=True, epsilon=0.0001) as deduped:
            kept = list(deduped)
            self.assertEqual(deduped.dedup_job, job.id)
            self.assertGreaterEqual(deduped.dedup_dropped or 0, 1)
        self.assertEqual(len({"twin-a", "twin-b"} & set(kept)), 1)

        manifest = self.client.create_manifest(self.dataset, selection={"order": "hardest", "fraction": 0.5}, name="hardest half")
        expected = list(self.client.select(self.dataset, order="hardest", fraction=0.5))
        with self.client.manifest_ids(manifest["id"]) as ids:
            self.assertEqual(list(ids), expected)
            self.assertEqual((ids.count, ids.sha256), (len(expected), manifest["sha256"]))
        digest = hashlib.sha256(b"".join(i.encode() + b"\0" for i in expected)).hexdigest()
        self.assertEqual(manifest["sha256"], digest)
        self.assertEqual(self.client.get_manifest(manifest["id"])["name"], "hardest half")
        dedup_manifest = self.client.create_manifest(self.dataset, selection={"fraction": 1.0, "dedup": True, "epsilon": 0.0001, "dedup_keep": "closest"})
        self.assertEqual(dedup_manifest["parameters"]["dedup"], {"epsilon": 0.0001, "keep": "closest"})
        self.assertEqual(dedup_manifest["count"], len(kept))
        export = self.client.create_manifest(self.dataset, export={"filter": {"contains": {"form": "array"}}})
        self.assertEqual(list(self.client.manifest_ids(export["id"])), [self.ids[3]])
        self.client.delete_manifest(export["id"])
        with self.assertRaises(ProtopruneError) as gone:
            self.client.get_manifest(export["id"])
        self.assertEqual(gone.exception.code, "MANIFEST_NOT_FOUND")
        with self.assertRaises(ValueError):
            self.client.create_manifest(self.dataset, selection={"fraction": 0.5, "epsilon": 0.1})


class Stub:
    """A local HTTP server answering each request with the next of ``answers`` (status, headers, body)."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                stub.requests.append((self.command, self.path))
                status, headers, body = stub.answers[min(len(stub.requests), len(stub.answers)) - 1]
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.client = Client(f"http://127.0.0.1:{self.server.server_address[1]}/prefix", api_key="pp_test", max_retries=3, max_retry_wait=5)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def refusal(status: int, code: str, retry_after: str | None = "0") -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"} | ({"Retry-After": retry_after} if retry_after is not None else {})
    return status, headers, json.dumps({"error": {"code": code, "message": f"{code} for the test", "details": {"reason": "test"}}}).encode()


DATASET = json.dumps({"name": "d", "dimension": 2, "k": None, "model": None, "activeVersion": None, "settings": {}, "createdAt": "", "updatedAt": ""}).encode()


class RetryTest(unittest.TestCase):
    """Retries of 429/503 after Retry-After, bounded, for idempotent requests only; broken streams."""

    def stub(self, answers: list[tuple[int, dict[str, str], bytes]]) -> Stub:
        stub = Stub(answers)
        self.addCleanup(stub.close)
        return stub

    def test_retries_idempotent_requests_after_retry_after(self) -> None:
        stub = self.stub([refusal(503, "SERVER_BUSY"), refusal(429, "RATE_LIMITED"), (200, {"Content-Type": "application/json"}, DATASET)])
        self.assertEqual(stub.client.get_dataset("d")["name"], "d")
        self.assertEqual(stub.requests, [("GET", "/prefix/v1/datasets/d")] * 3)

    def test_gives_up_after_max_retries(self) -> None:
        stub = self.stub([refusal(503, "DATABASE_UNAVAILABLE")])
        with self.assertRaises(ProtopruneError) as error:
            stub.client.stats("d")
        self.assertEqual((error.exception.status, error.exception.code, error.exception.retry_after), (503, "DATABASE_UNAVAILABLE", 0.0))
        self.assertEqual(error.exception.details, {"reason": "test"})
        self.assertEqual(len(stub.requests), 4)

    def test_does_not_wait_longer_than_max_retry_wait(self) -> None:
        stub = self.stub([refusal(429, "RATE_LIMITED", "30")])
        with self.assertRaises(ProtopruneError) as error:
            stub.client.list_datasets()
        self.assertEqual((error.exception.code, error.exception.retry_after), ("RATE_LIMITED", 30.0))
        self.assertEqual(len(stub.requests), 1)

    def test_does_not_retry_requests_that_are_not_idempotent(self) -> None:
        stub = self.stub([refusal(503, "SERVER_BUSY"), (201, {"Content-Type": "application/json"}, DATASET)])
        with self.assertRaises(ProtopruneError) as error:
            stub.client.create_dataset("d", dimension=2)
        self.assertEqual(error.exception.code, "SERVER_BUSY")
        self.assertEqual(stub.requests, [("POST", "/prefix/v1/datasets")])

    def test_does_not_retry_other_refusals_and_reads_any_error_body(self) -> None:
        stub = self.stub([(502, {"Content-Type": "text/html"}, b"<h1>Bad gateway</h1>")])
        with self.assertRaises(ProtopruneError) as error:
            stub.client.get_dataset("d")
        self.assertEqual((error.exception.status, error.exception.code), (502, "HTTP_502"))
        self.assertEqual(len(stub.requests), 1)

    def test_retries_ingest_which_is_idempotent_by_external_id(self) -> None:
        answer: dict[str, Any] = {"prototypeVersion": None, "scheduledJobId": None, "counts": {"stored": 1, "updated": 0, "failed": 0}, "items": []}
        ok = (200, {"Content-Type": "application/json"}, json.dumps(answer).encode())
        stub = self.stub([(200, {"Content-Type": "application/json"}, DATASET), refusal(503, "SERVER_BUSY"), ok])
        report = stub.client.ingest_embeddings("d", ["a/b c"], [[1.0, 2.0]])
        self.assertEqual(report.stored, 1)
        self.assertEqual(
            [r[1] for r in stub.requests], ["/prefix/v1/datasets/d", "/prefix/v1/datasets/d/items?results=errors", "/prefix/v1/datasets/d/items?results=errors"]
        )

    def test_a_stream_cut_inside_a_line_raises(self) -> None:
        stub = self.stub([(200, {"Content-Type": "application/x-ndjson"}, b'{"externalId":"a"}\n{"externalId":"b')])
        stream = stub.client.select("d", fraction=0.5, filter={"contains": {"split": "train"}})
        self.assertEqual(next(stream), "a")
        with self.assertRaises(ProtopruneError) as error:
            next(stream)
        self.assertEqual(error.exception.code, "STREAM_INTERRUPTED")
        self.assertEqual(
            stub.requests[0][1], "/prefix/v1/datasets/d/selection?fraction=0.5&filter=%7B%22contains%22%3A%7B%22split%22%3A%22train%22%7D%7D&format=ndjson"
        )

    def test_reads_the_url_and_key_from_the_environment(self) -> None:
        with mock.patch.dict(os.environ, {"PROTOPRUNE_URL": "http://example.invalid:1234"}):
            self.assertEqual(Client().url, "http://example.invalid:1234")
            self.assertEqual(Client("http://other:1").url, "http://other:1")
        with mock.patch.dict(os.environ, {"PROTOPRUNE_URL": ""}):
            self.assertEqual(Client().url, "http://localhost:8080")
        with self.assertRaises(ValueError):
            Client("ftp://nope")
        self.assertEqual(protoprune.__version__, "0.1.0")


if __name__ == "__main__":
    unittest.main()
