import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { authorize, authorizeJob, listApiKeys, mayAccessDataset, mintApiKey, revokeApiKey, type Principal } from '../service/auth.js';
import type { ServiceContext } from '../service/context.js';
import { createDataset, deleteDataset, getDataset, listDatasets } from '../service/datasets.js';
import { findDuplicates } from '../service/duplicates.js';
import { checkItemCount, refuseIfNoItemUsable, ServiceError } from '../service/errors.js';
import { createImageDataset, ingestItems } from '../service/images.js';
import type { ItemOutcome } from '../service/ingest.js';
import { deleteItem, getItem } from '../service/items.js';
import { getJobView, watchJob, type JobView } from '../service/jobs.js';
import { prototypeStatus } from '../service/prototypes.js';
import { requestRefit } from '../service/refit.js';
import { scoreBatch, type CandidateScore } from '../service/score.js';
import { computeSelection, ID_CHUNK, selectedExternalIds } from '../service/selection.js';
import { datasetStats } from '../service/stats.js';
import {
  apiKeyMessage,
  candidateMessage,
  createDatasetInput,
  datasetMessage,
  decodeBatch,
  duplicateReportMessage,
  itemMessage,
  itemOutcomeMessage,
  jobMessage,
  prototypeStatusMessage,
  scorePolicy,
  scoreResultMessage,
  selectionRequest,
  statsMessage,
  type CreateDatasetMsg,
  type ScorePolicyMsg,
  type SelectMsg,
  type VectorItemMsg,
} from './convert.js';
import { ERROR_CODE_KEY, ERROR_DETAILS_KEY, toGrpcError } from './errors.js';
import { admit, type RateLimiter } from './guard.js';
import { MALFORMED_MESSAGE } from './proto.js';
import { assertValidText, printable } from '../service/text.js';

export interface HandlerDeps {
  ctx: ServiceContext;
  api: Config['api'];
  logger: Logger;
  limiter: RateLimiter;
  /** How often WatchJob polls the job row. */
  watchIntervalMs?: number;
}

type Msg = Record<string, unknown>;

function outcomeCounts(outcomes: readonly ItemOutcome[]) {
  const counts = { stored: 0, updated: 0, failed: 0 };
  for (const o of outcomes) counts[o.status === 'error' ? 'failed' : o.status]++;
  return counts;
}

function waitForDrain(call: grpc.ServerWritableStream<Msg, Msg>): Promise<void> {
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

  function unary(method: string, run: (req: Msg, principal: Principal) => Promise<unknown>): grpc.handleUnaryCall<Msg, unknown> {
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

  function serverStream(
    method: string,
    run: (req: Msg, principal: Principal, signal: AbortSignal) => AsyncIterable<unknown>,
  ): grpc.handleServerStreamingCall<Msg, unknown> {
    return (call) => {
      const abort = new AbortController();
      call.on('cancelled', () => abort.abort());
      void (async () => {
        try {
          const principal = await admit(ctx, limiter, call.metadata, call.getPeer());
          checkMessage(call.request);
          for await (const message of run(call.request, principal, abort.signal)) {
            if (call.cancelled || abort.signal.aborted) return;
            if (!call.write(message)) await waitForDrain(call as grpc.ServerWritableStream<Msg, Msg>);
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
  const ingest: grpc.handleClientStreamingCall<Msg, unknown> = (call, callback) => {
    let answered = false;
    const answer = (error: Partial<grpc.StatusObject> | null, response?: unknown) => {
      if (answered) return;
      answered = true;
      if (error) callback(error);
      else callback(null, response);
    };
    void (async () => {
      const iterator = call[Symbol.asyncIterator]() as AsyncIterator<Msg>;
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
          const msg = next.value as { dataset: string; items: VectorItemMsg[] };
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
          checkItemCount(items.length, api.maxItemsPerRequest);
          if (items.length === 0) continue;
          ctx.metrics?.ingestBytes('grpc', items.reduce((sum, m) => sum + (m.image?.byteLength ?? 0) + (m.embeddingF32le?.byteLength ?? 0) + (m.embedding?.length ?? 0) * 4, 0));
          const batch = decodeBatch<ItemOutcome>(items, true);
          const result = batch.good.length > 0 ? await ingestItems(ctx, dataset, batch.good) : null;
          if (result) {
            prototypeVersion = result.prototypeVersion;
            if (result.scheduledJobId) scheduled.push(result.scheduledJobId);
          }
          const merged = batch.merge(result?.items ?? [], (externalId, e) => ({ externalId, status: 'error', code: e.code, message: e.message }));
          ctx.metrics?.ingestItems('grpc', outcomeCounts(merged));
          outcomes.push(...merged);
        }
        if (dataset === null) throw new ServiceError('invalid', 'EMPTY_INGEST', 'the stream carried no message; name the dataset in at least one', { field: 'dataset' });
        refuseIfNoItemUsable(outcomes);
        if (prototypeVersion === null) prototypeVersion = (await getDataset(ctx, dataset)).activeVersion;
        const count = (status: ItemOutcome['status']) => outcomes.filter((o) => o.status === status).length;
        answer(null, {
          dataset,
          items: outcomes.map(itemOutcomeMessage),
          stored: count('stored'),
          updated: count('updated'),
          failed: count('error'),
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
    CreateDataset: unary('CreateDataset', async (req, principal) => {
      const input = createDatasetInput(req as unknown as CreateDatasetMsg);
      authorize(principal, 'admin', input.name);
      const { dimension, ...rest } = input;
      const dataset = dimension === undefined ? await createImageDataset(ctx, rest) : await createDataset(ctx, { ...rest, dimension });
      return datasetMessage(dataset);
    }),

    ListDatasets: unary('ListDatasets', async (_req, principal) => {
      authorize(principal, 'read');
      const all = await listDatasets(ctx);
      return { datasets: all.filter((d) => mayAccessDataset(principal, d.name)).map(datasetMessage) };
    }),

    GetDataset: unary('GetDataset', async (req, principal) => {
      authorize(principal, 'read', req.name as string);
      return datasetMessage(await getDataset(ctx, req.name as string));
    }),

    DeleteDataset: unary('DeleteDataset', async (req, principal) => {
      authorize(principal, 'admin', req.name as string);
      await deleteDataset(ctx, req.name as string);
      return {};
    }),

    IngestItems: ingest,

    Select: serverStream('Select', async function* (req, principal, signal) {
      const msg = req as unknown as SelectMsg;
      authorize(principal, 'read', msg.dataset);
      const chunkSize = msg.chunkSize ?? ID_CHUNK;
      if (!(Number.isInteger(chunkSize) && chunkSize >= 1 && chunkSize <= ID_CHUNK)) {
        throw new ServiceError('invalid', 'INVALID_SELECTION', `chunk_size must be an integer from 1 to ${ID_CHUNK}`, { field: 'chunk_size' });
      }
      const handle = await computeSelection(ctx, msg.dataset, selectionRequest(msg));
      let summary: unknown = { prototypeVersion: handle.version, total: handle.total, size: handle.itemIds.length };
      for await (const ids of selectedExternalIds(ctx, handle.itemIds)) {
        if (signal.aborted) return;
        for (let at = 0; at < ids.length; at += chunkSize) {
          yield { summary, externalIds: ids.slice(at, at + chunkSize) };
          summary = null;
        }
      }
      if (summary !== null) yield { summary, externalIds: [] };
    }),

    ScoreBatch: unary('ScoreBatch', async (req, principal) => {
      const dataset = req.dataset as string;
      authorize(principal, 'read', dataset);
      const candidates = (req.candidates as VectorItemMsg[]) ?? [];
      checkItemCount(candidates.length, api.maxItemsPerRequest);
      const policy = scorePolicy(req.policy as ScorePolicyMsg | null);
      const batch = decodeBatch<CandidateScore>(candidates, false);
      const result = await scoreBatch(ctx, dataset, batch.good, policy);
      const items = batch.merge(result.items, (externalId, e) => ({ externalId, status: 'error', code: e.code, message: e.message }));
      refuseIfNoItemUsable(items);
      return scoreResultMessage(result, items.map(candidateMessage));
    }),

    GetPrototypes: unary('GetPrototypes', async (req, principal) => {
      authorize(principal, 'read', req.dataset as string);
      return prototypeStatusMessage(await prototypeStatus(ctx, req.dataset as string));
    }),

    RequestRefit: unary('RequestRefit', async (req, principal) => {
      authorize(principal, 'write', req.dataset as string);
      return jobMessage(await requestRefit(ctx, req.dataset as string));
    }),

    GetJob: unary('GetJob', async (req, principal) => {
      authorize(principal, 'read');
      const job = await getJobView(ctx.db, req.id as string);
      authorizeJob(principal, job);
      return jobMessage(job);
    }),

    WatchJob: serverStream('WatchJob', async function* (req, principal, signal) {
      authorize(principal, 'read');
      authorizeJob(principal, await getJobView(ctx.db, req.id as string));
      for await (const view of watchJob(ctx.db, req.id as string, watchIntervalMs, signal)) yield jobMessage(view);
    }),

    FindDuplicates: unary('FindDuplicates', async (req, principal) => {
      authorize(principal, 'read', req.dataset as string);
      return duplicateReportMessage(await findDuplicates(ctx, req.dataset as string, req.epsilon as number | undefined));
    }),

    GetStats: unary('GetStats', async (req, principal) => {
      authorize(principal, 'read', req.dataset as string);
      return statsMessage(await datasetStats(ctx, req.dataset as string));
    }),

    GetItem: unary('GetItem', async (req, principal) => {
      authorize(principal, 'read', req.dataset as string);
      return itemMessage(await getItem(ctx, req.dataset as string, req.externalId as string));
    }),

    DeleteItem: unary('DeleteItem', async (req, principal) => {
      authorize(principal, 'write', req.dataset as string);
      await deleteItem(ctx, req.dataset as string, req.externalId as string);
      return {};
    }),

    CreateApiKey: unary('CreateApiKey', async (req, principal) => {
      authorize(principal, 'admin');
      const key = await mintApiKey(ctx.db, { name: req.name as string, scopes: req.scopes as string[], datasets: req.datasets as string[] }, principal);
      return { key: apiKeyMessage(key), secret: key.secret };
    }),

    ListApiKeys: unary('ListApiKeys', async (_req, principal) => {
      authorize(principal, 'admin');
      return { keys: (await listApiKeys(ctx.db, principal)).map(apiKeyMessage) };
    }),

    RevokeApiKey: unary('RevokeApiKey', async (req, principal) => {
      authorize(principal, 'admin');
      return apiKeyMessage(await revokeApiKey(ctx.db, req.id as string, principal));
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
