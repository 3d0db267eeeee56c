import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { authorize, authorizeJob, listApiKeys, mayAccessDataset, mintApiKey, revokeApiKey, type Principal } from '../service/auth.js';
import type { ServiceContext } from '../service/context.js';
import { createDataset, createImageDataset, deleteDataset, getDataset, listDatasets } from '../service/datasets.js';
import { duplicatePage, requestDedup, streamDuplicates } from '../service/dedup.js';
import { checkItemCount, refuseIfNoItemUsable, ServiceError } from '../service/errors.js';
import { deleteItem, getItem } from '../service/items.js';
import { getJobView, watchJob } from '../service/jobs.js';
import { prototypeStatus } from '../service/prototypes.js';
import { requestRefit } from '../service/refit.js';
import { scoreBatch, type CandidateScore } from '../service/score.js';
import { exportScores } from '../service/score-export.js';
import { ID_CHUNK, streamSelection } from '../service/selection.js';
import { DEFAULT_GROUP_PAGE_LIMIT, DEFAULT_MANIFEST_PAGE_LIMIT, MAX_GROUP_PAGE_LIMIT, MAX_MANIFEST_PAGE_LIMIT } from '../service/limits.js';
import { datasetStats } from '../service/stats.js';
import {
  apiKeyMessage,
  candidateMessage,
  createDatasetInput,
  datasetMessage,
  decodeBatch,
  dedupOutcomeMessage,
  imbalanceMessage,
  selectionPolicyMessage,
  duplicateReportMessage,
  itemMessage,
  itemOutcomeMessage,
  metadataFilter,
  jobMessage,
  prototypeStatusMessage,
  scorePolicy,
  scoreResultMessage,
  scoredItemMessage,
  selectionRequest,
  statsMessage,
  type Outgoing,
} from './convert.js';
import type * as pb from '../generated/proto/protoprune/v1/protoprune.js';
import { ERROR_CODE_KEY, ERROR_DETAILS_KEY, toGrpcError } from './errors.js';
import { admit, type RateLimiter } from './guard.js';
import { MALFORMED_MESSAGE } from './proto.js';
import { assertValidText, printable } from '../service/text.js';
import { ingestItems } from '../service/ingest.js';
import { countOutcomes, type ItemOutcome } from '../service/ingest-items.js';
import { createManifest, deleteManifest, getManifest, listManifests, manifestIds } from '../service/manifests.js';
import { manifestInput, manifestMessage } from './manifests.js';

export interface HandlerDeps {
  ctx: ServiceContext;
  api: Config['api'];
  logger: Logger;
  limiter: RateLimiter;
  /** How often WatchJob polls the job row. */
  watchIntervalMs?: number;
}

function waitForDrain<Req, Res>(call: grpc.ServerWritableStream<Req, Res>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off('drain', done);
      call.off('cancelled', done);
      call.off('close', done);
      resolve();
    };
    call.on('drain', done);
    call.on('cancelled', done);
    call.on('close', done);
  });
}

/**
 * Every request message is checked before any use case sees it: a message that did not parse
 * (MALFORMED_MESSAGE), and strings that are not storable text (see assertValidText), are
 * INVALID_ARGUMENT.
 */
function checkMessage(message: unknown): void {
  const malformed = (message as { [MALFORMED_MESSAGE]?: string } | null)?.[MALFORMED_MESSAGE];
  if (malformed !== undefined) {
    throw new ServiceError('invalid', 'MALFORMED_MESSAGE', `the request is not a valid protobuf message: ${printable(malformed, 200)}`, {});
  }
  assertValidText(message, 'request');
}

/** Most ids or rows per message of a streamed answer: default and maximum ID_CHUNK. */
function checkChunkSize(requested: number | undefined): number {
  const chunkSize = requested ?? ID_CHUNK;
  if (!(Number.isInteger(chunkSize) && chunkSize >= 1 && chunkSize <= ID_CHUNK)) {
    throw new ServiceError('invalid', 'INVALID_CHUNK_SIZE', `chunk_size must be an integer from 1 to ${ID_CHUNK}`, { field: 'chunk_size' });
  }
  return chunkSize;
}

/** Builds the Protoprune service implementation: each handler authenticates, authorizes and calls one use case. */
export function protopruneHandlers(deps: HandlerDeps): grpc.UntypedServiceImplementation {
  const { ctx, api, logger, limiter } = deps;
  const watchIntervalMs = deps.watchIntervalMs ?? 250;

  /** Ends a call whose own error answer failed to go out: no failure of one call may escape it and end the process. */
  function lastResort(method: string, error: unknown, end: (status: Partial<grpc.StatusObject>) => void): void {
    logger.error({ err: error, method }, 'gRPC call could not be answered normally');
    try {
      end({ code: grpc.status.INTERNAL, details: 'internal error' });
    } catch {
      // The call is already closed; nothing is left to answer.
    }
  }

  function unary<Req, Res>(method: string, run: (req: Req, principal: Principal) => Promise<Outgoing<Res>>): grpc.handleUnaryCall<Req, Outgoing<Res>> {
    return (call, callback) => {
      admit(ctx, limiter, call.metadata, call.getPeer())
        .then((principal) => {
          checkMessage(call.request);
          return run(call.request, principal);
        })
        .then(
          (response) => callback(null, response),
          (error) => callback(toGrpcError(error, logger, method)),
        )
        .catch((error: unknown) => lastResort(method, error, (status) => callback(status)));
    };
  }

  function serverStream<Req, Res>(
    method: string,
    run: (req: Req, principal: Principal, signal: AbortSignal) => AsyncIterable<Outgoing<Res>>,
  ): grpc.handleServerStreamingCall<Req, Outgoing<Res>> {
    return (call) => {
      const abort = new AbortController();
      call.on('cancelled', () => abort.abort());
      void (async () => {
        try {
          const principal = await admit(ctx, limiter, call.metadata, call.getPeer());
          checkMessage(call.request);
          for await (const message of run(call.request, principal, abort.signal)) {
            if (call.cancelled || abort.signal.aborted) return;
            if (!call.write(message)) await waitForDrain(call);
          }
          if (!call.cancelled) call.end();
        } catch (error) {
          if (call.cancelled) return;
          try {
            call.emit('error', toGrpcError(error, logger, method));
          } catch (unanswered) {
            lastResort(method, unanswered, (status) => call.emit('error', status));
          }
        }
      })().catch((error: unknown) => lastResort(method, error, (status) => call.emit('error', status)));
    };
  }

  /**
   * IngestItems: each message is ingested as a batch when it arrives (the stream is read one
   * message at a time, so a fast client is held back by HTTP/2 flow control, not buffered), and
   * one answer at the end holds every outcome. A client silent for longer than the request timeout
   * between messages is cut off (DEADLINE_EXCEEDED, REQUEST_TIMEOUT).
   */
  const ingest: grpc.handleClientStreamingCall<pb.IngestItemsRequest, Outgoing<pb.IngestItemsResponse>> = (call, callback) => {
    let answered = false;
    const answer = (error: Partial<grpc.StatusObject> | null, response?: Outgoing<pb.IngestItemsResponse>) => {
      if (answered) return;
      answered = true;
      if (error) callback(error);
      else callback(null, response);
    };
    void (async () => {
      const iterator: AsyncIterator<pb.IngestItemsRequest> = call[Symbol.asyncIterator]();
      try {
        const principal = await admit(ctx, limiter, call.metadata, call.getPeer());
        let dataset: string | null = null;
        const outcomes: ItemOutcome[] = [];
        const scheduled: string[] = [];
        let prototypeVersion: number | null = null;
        let batches = 0;
        for (;;) {
          const next = await nextWithin(iterator, api.requestTimeoutMs);
          if (next === 'timeout') {
            const metadata = new grpc.Metadata();
            metadata.set(ERROR_CODE_KEY, 'REQUEST_TIMEOUT');
            metadata.set(ERROR_DETAILS_KEY, JSON.stringify({ timeoutMs: api.requestTimeoutMs }));
            answer({ code: grpc.status.DEADLINE_EXCEEDED, details: `no message for ${api.requestTimeoutMs} ms`, metadata });
            return;
          }
          if (next.done) break;
          if (call.cancelled) return;
          checkMessage(next.value);
          const msg = next.value;
          if (dataset === null) {
            dataset = msg.dataset;
            authorize(principal, 'write', dataset);
          } else if (msg.dataset !== dataset) {
            throw new ServiceError('invalid', 'DATASET_MISMATCH', `every message of a stream must name the same dataset: ${dataset}, then ${msg.dataset}`, {
              field: 'dataset',
              expected: dataset,
              got: msg.dataset,
            });
          }
          batches++;
          const items = msg.items ?? [];
          const packedCount = msg.packed?.externalIds?.length ?? 0;
          checkItemCount(items.length + packedCount, api.maxItemsPerRequest);
          const batch = decodeBatch<ItemOutcome>(items, msg.packed);
          if (items.length + packedCount === 0) continue;
          ctx.metrics?.ingestBytes(
            'grpc',
            items.reduce((sum, m) => sum + (m.image?.byteLength ?? 0) + (m.embeddingF32le?.byteLength ?? 0) + (m.embedding?.length ?? 0) * 4, msg.packed?.vectorsF32le?.byteLength ?? 0),
          );
          const result = batch.good.length > 0 ? await ingestItems(ctx, dataset, batch.good) : null;
          if (result) {
            prototypeVersion = result.prototypeVersion;
            if (result.scheduledJobId) scheduled.push(result.scheduledJobId);
          }
          const merged = batch.merge(result?.items ?? [], (externalId, e) => ({ externalId, status: 'error', code: e.code, message: e.message }));
          ctx.metrics?.ingestItems('grpc', countOutcomes(merged));
          outcomes.push(...merged);
        }
        if (dataset === null) throw new ServiceError('invalid', 'EMPTY_INGEST', 'the stream carried no message; name the dataset in at least one', { field: 'dataset' });
        refuseIfNoItemUsable(outcomes);
        if (prototypeVersion === null) prototypeVersion = (await getDataset(ctx, dataset)).activeVersion;
        answer(null, {
          dataset,
          items: outcomes.map(itemOutcomeMessage),
          ...countOutcomes(outcomes),
          batches,
          prototypeVersion: prototypeVersion ?? undefined,
          scheduledJobIds: scheduled,
        });
      } catch (error) {
        if (!call.cancelled) answer(toGrpcError(error, logger, 'IngestItems'));
      } finally {
        // Closing the iterator of a stream that already failed rejects; that failure was answered above.
        iterator.return?.()?.catch(() => undefined);
      }
    })().catch((error: unknown) => lastResort('IngestItems', error, (status) => callback(status)));
  };

  return {
    CreateDataset: unary<pb.CreateDatasetRequest, pb.Dataset>('CreateDataset', async (req, principal) => {
      const input = createDatasetInput(req);
      authorize(principal, 'admin', input.name);
      const { dimension, ...rest } = input;
      const dataset = dimension === undefined ? await createImageDataset(ctx, rest) : await createDataset(ctx, { ...rest, dimension });
      return datasetMessage(dataset);
    }),

    ListDatasets: unary<pb.ListDatasetsRequest, pb.ListDatasetsResponse>('ListDatasets', async (_req, principal) => {
      authorize(principal, 'read');
      const all = await listDatasets(ctx);
      return { datasets: all.filter((d) => mayAccessDataset(principal, d.name)).map(datasetMessage) };
    }),

    GetDataset: unary<pb.GetDatasetRequest, pb.Dataset>('GetDataset', async (req, principal) => {
      authorize(principal, 'read', req.name);
      return datasetMessage(await getDataset(ctx, req.name));
    }),

    DeleteDataset: unary<pb.DeleteDatasetRequest, pb.DeleteDatasetResponse>('DeleteDataset', async (req, principal) => {
      authorize(principal, 'admin', req.name);
      await deleteDataset(ctx, req.name);
      return {};
    }),

    IngestItems: ingest,

    Select: serverStream<pb.SelectRequest, pb.SelectResponse>('Select', async function* (msg, principal, signal) {
      authorize(principal, 'read', msg.dataset);
      const chunkSize = checkChunkSize(msg.chunkSize);
      const stream = await streamSelection(ctx, msg.dataset, selectionRequest(msg));
      // A call cancelled while this generator waits for the client to read still frees the snapshot.
      signal.addEventListener('abort', stream.cancel, { once: true });
      try {
        let summary: Outgoing<pb.SelectionSummary> | null = {
          prototypeVersion: stream.version,
          total: stream.total,
          size: stream.size,
          matched: stream.matched,
          dedup: dedupOutcomeMessage(stream.dedup),
          policy: selectionPolicyMessage(stream.policy),
          imbalance: imbalanceMessage(stream.imbalance),
        };
        for await (const ids of stream.externalIds) {
          if (signal.aborted) return;
          for (let at = 0; at < ids.length; at += chunkSize) {
            yield { summary, externalIds: ids.slice(at, at + chunkSize) };
            summary = null;
          }
        }
        if (summary !== null) yield { summary, externalIds: [] };
      } finally {
        signal.removeEventListener('abort', stream.cancel);
        stream.cancel();
      }
    }),

    ExportScores: serverStream<pb.ExportScoresRequest, pb.ExportScoresResponse>('ExportScores', async function* (msg, principal, signal) {
      authorize(principal, 'read', msg.dataset);
      const chunkSize = checkChunkSize(msg.chunkSize);
      const exported = await exportScores(ctx, msg.dataset, { epsilon: msg.epsilon, jobId: msg.jobId, filter: metadataFilter(msg.filter) });
      signal.addEventListener('abort', exported.cancel, { once: true });
      try {
        let summary: Outgoing<pb.ExportSummary> | null = {
          prototypeVersion: exported.version,
          total: exported.total,
          dedupJobId: exported.dedupJobId ?? '',
          matched: exported.matched,
        };
        for await (const rows of exported.rows) {
          if (signal.aborted) return;
          for (let at = 0; at < rows.length; at += chunkSize) {
            yield { summary, items: rows.slice(at, at + chunkSize).map(scoredItemMessage) };
            summary = null;
          }
        }
        if (summary !== null) yield { summary, items: [] };
      } finally {
        signal.removeEventListener('abort', exported.cancel);
        exported.cancel();
      }
    }),

    ScoreBatch: unary<pb.ScoreBatchRequest, pb.ScoreBatchResponse>('ScoreBatch', async (req, principal) => {
      const dataset = req.dataset;
      authorize(principal, 'read', dataset);
      const candidates = req.candidates ?? [];
      checkItemCount(candidates.length, api.maxItemsPerRequest);
      const policy = scorePolicy(req.policy);
      const batch = decodeBatch<CandidateScore>(candidates);
      const result = await scoreBatch(ctx, dataset, batch.good, policy);
      const items = batch.merge(result.items, (externalId, e) => ({ externalId, status: 'error', code: e.code, message: e.message }));
      refuseIfNoItemUsable(items);
      return scoreResultMessage(result, items.map(candidateMessage));
    }),

    GetPrototypes: unary<pb.GetPrototypesRequest, pb.PrototypeStatus>('GetPrototypes', async (req, principal) => {
      authorize(principal, 'read', req.dataset);
      return prototypeStatusMessage(await prototypeStatus(ctx, req.dataset));
    }),

    RequestRefit: unary<pb.RequestRefitRequest, pb.Job>('RequestRefit', async (req, principal) => {
      authorize(principal, 'write', req.dataset);
      return jobMessage(await requestRefit(ctx, req.dataset));
    }),

    GetJob: unary<pb.GetJobRequest, pb.Job>('GetJob', async (req, principal) => {
      authorize(principal, 'read');
      const job = await getJobView(ctx.db, req.id);
      authorizeJob(principal, job);
      return jobMessage(job);
    }),

    WatchJob: serverStream<pb.WatchJobRequest, pb.Job>('WatchJob', async function* (req, principal, signal) {
      authorize(principal, 'read');
      authorizeJob(principal, await getJobView(ctx.db, req.id));
      for await (const view of watchJob(ctx.db, req.id, watchIntervalMs, signal)) yield jobMessage(view);
    }),

    RequestDedup: unary<pb.RequestDedupRequest, pb.Job>('RequestDedup', async (req, principal) => {
      authorize(principal, 'write', req.dataset);
      return jobMessage(await requestDedup(ctx, req.dataset, req.epsilon));
    }),

    FindDuplicates: unary<pb.FindDuplicatesRequest, pb.DuplicateReport>('FindDuplicates', async (req, principal) => {
      authorize(principal, 'read', req.dataset);
      const limit = req.pageSize ?? DEFAULT_GROUP_PAGE_LIMIT;
      if (!(Number.isInteger(limit) && limit >= 1 && limit <= MAX_GROUP_PAGE_LIMIT)) {
        throw new ServiceError('invalid', 'INVALID_PAGE_SIZE', `page_size must be an integer from 1 to ${MAX_GROUP_PAGE_LIMIT}`, { field: 'page_size' });
      }
      const page = await duplicatePage(ctx, req.dataset, { epsilon: req.epsilon, jobId: req.jobId, cursor: req.pageToken || undefined, limit });
      return duplicateReportMessage(page.run, page.groups, page.nextCursor);
    }),

    StreamDuplicates: serverStream<pb.FindDuplicatesRequest, pb.DuplicateReport>('StreamDuplicates', async function* (req, principal, signal) {
      authorize(principal, 'read', req.dataset);
      const stream = await streamDuplicates(ctx, req.dataset, { epsilon: req.epsilon, jobId: req.jobId });
      let sent = false;
      for await (const groups of stream.groups) {
        if (signal.aborted) return;
        yield duplicateReportMessage(stream.run, groups, null);
        sent = true;
      }
      if (!sent) yield duplicateReportMessage(stream.run, [], null);
    }),

    GetStats: unary<pb.GetStatsRequest, pb.DatasetStats>('GetStats', async (req, principal) => {
      authorize(principal, 'read', req.dataset);
      return statsMessage(await datasetStats(ctx, req.dataset, metadataFilter(req.filter)));
    }),

    GetItem: unary<pb.GetItemRequest, pb.Item>('GetItem', async (req, principal) => {
      authorize(principal, 'read', req.dataset);
      return itemMessage(await getItem(ctx, req.dataset, req.externalId));
    }),

    DeleteItem: unary<pb.DeleteItemRequest, pb.DeleteItemResponse>('DeleteItem', async (req, principal) => {
      authorize(principal, 'write', req.dataset);
      await deleteItem(ctx, req.dataset, req.externalId);
      return {};
    }),

    CreateApiKey: unary<pb.CreateApiKeyRequest, pb.CreateApiKeyResponse>('CreateApiKey', async (req, principal) => {
      authorize(principal, 'admin');
      const key = await mintApiKey(ctx.db, { name: req.name, scopes: req.scopes, datasets: req.datasets }, principal);
      return { key: apiKeyMessage(key), secret: key.secret };
    }),

    ListApiKeys: unary<pb.ListApiKeysRequest, pb.ListApiKeysResponse>('ListApiKeys', async (_req, principal) => {
      authorize(principal, 'admin');
      return { keys: (await listApiKeys(ctx.db, principal)).map(apiKeyMessage) };
    }),

    RevokeApiKey: unary<pb.RevokeApiKeyRequest, pb.ApiKey>('RevokeApiKey', async (req, principal) => {
      authorize(principal, 'admin');
      return apiKeyMessage(await revokeApiKey(ctx.db, req.id, principal));
    }),

    CreateManifest: unary<pb.CreateManifestRequest, pb.Manifest>('CreateManifest', async (req, principal) => {
      authorize(principal, 'write', req.dataset);
      return manifestMessage(await createManifest(ctx, req.dataset, manifestInput(req), principal));
    }),

    GetManifest: unary<pb.GetManifestRequest, pb.Manifest>('GetManifest', async (req, principal) => {
      authorize(principal, 'read');
      return manifestMessage(await getManifest(ctx, req.id, principal));
    }),

    StreamManifestIds: serverStream<pb.StreamManifestIdsRequest, pb.ManifestIdsResponse>('StreamManifestIds', async function* (req, principal, signal) {
      authorize(principal, 'read');
      const chunkSize = checkChunkSize(req.chunkSize);
      const manifest = await getManifest(ctx, req.id, principal);
      // Ids are read a stored chunk at a time, no snapshot held: leaving the loop (an abort) frees everything.
      let head: Outgoing<pb.Manifest> | null = manifestMessage(manifest);
      for await (const ids of manifestIds(ctx, manifest)) {
        if (signal.aborted) return;
        for (let at = 0; at < ids.length; at += chunkSize) {
          yield { manifest: head, externalIds: ids.slice(at, at + chunkSize) };
          head = null;
        }
      }
      if (head !== null) yield { manifest: head, externalIds: [] };
    }),

    ListManifests: unary<pb.ListManifestsRequest, pb.ListManifestsResponse>('ListManifests', async (req, principal) => {
      authorize(principal, 'read', req.dataset);
      const limit = req.pageSize ?? DEFAULT_MANIFEST_PAGE_LIMIT;
      if (!(Number.isInteger(limit) && limit >= 1 && limit <= MAX_MANIFEST_PAGE_LIMIT)) {
        throw new ServiceError('invalid', 'INVALID_PAGE_SIZE', `page_size must be an integer from 1 to ${MAX_MANIFEST_PAGE_LIMIT}`, { field: 'page_size' });
      }
      const page = await listManifests(ctx, req.dataset, { cursor: req.pageToken || undefined, limit });
      return { manifests: page.manifests.map(manifestMessage), nextPageToken: page.nextCursor ?? '' };
    }),

    DeleteManifest: unary<pb.DeleteManifestRequest, pb.DeleteManifestResponse>('DeleteManifest', async (req, principal) => {
      authorize(principal, 'write');
      await deleteManifest(ctx, req.id, principal);
      return {};
    }),
  };
}

/** The iterator's next message, or 'timeout' when none arrives within `ms` (0: wait forever). */
async function nextWithin<T>(iterator: AsyncIterator<T>, ms: number): Promise<IteratorResult<T> | 'timeout'> {
  if (ms <= 0) return iterator.next();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    return await Promise.race([iterator.next(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
