import * as grpc from '@grpc/grpc-js';
import http2 from 'node:http2';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXTERNAL_ID_MAX_LENGTH } from '../../src/service/limits.js';
import { BACKENDS } from '../helpers/backends.js';
import { bearer, startApi, type ApiHarness } from '../http/api-harness.js';
import { ApiClient, f32le, type CallFailure } from './client.js';

/**
 * gRPC under hostile input: no content of a request can put illegal characters into the answer's
 * trailers (which grpc-js would throw on, ending the process), a message that is not protobuf is
 * INVALID_ARGUMENT, and text PostgreSQL cannot store never reaches it.
 */
describe.each(BACKENDS)('hostile gRPC input on the $name backend', (backend) => {
  let h: ApiHarness;
  let admin: ApiClient;
  let reader: ApiClient;

  beforeAll(async () => {
    h = await startApi(backend);
    admin = new ApiClient(h.service.grpc.port, h.keys.admin);
    reader = admin.withKey(h.keys.reader);
    await request(h.service.http.server).post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'vecs', dimension: 4 }).expect(201);
  });
  afterAll(async () => {
    admin?.close();
    await h?.close();
  });

  async function stillServing() {
    expect((await reader.unary('GetDataset', { name: 'vecs' })).name).toBe('vecs');
  }

  it('answers errors about non-ASCII, emoji and long text with ASCII trailers that decode to the exact text', async () => {
    for (const name of ['café', '数据集-🦊', 'ünïcödé\u2028line']) {
      const failure = await reader.fails('GetDataset', { name });
      expect(failure).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'DATASET_NOT_FOUND', errorDetails: { name } });
      expect(failure.details).toContain(name);
      expect(failure.metadata.get('error-details')[0]).toMatch(/^[\x20-\x7e]*$/);
    }
    const longId = '名'.repeat(EXTERNAL_ID_MAX_LENGTH);
    const item = await reader.fails('GetItem', { dataset: 'vecs', externalId: longId });
    expect(item).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'ITEM_NOT_FOUND' });
    // Details are clipped, so the trailers stay far below a client's 8 KiB metadata limit.
    expect((item.errorDetails!.externalId as string).startsWith('名'.repeat(200))).toBe(true);
    expect((item.metadata.get('error-details')[0] as string).length).toBeLessThan(4096);
    await stillServing();
  });

  it('refuses NUL and lone surrogates in any string field with INVALID_ARGUMENT INVALID_CHARACTERS', async () => {
    const calls: Array<[string, Record<string, unknown>]> = [
      ['GetDataset', { name: 'a\u0000' }],
      ['GetItem', { dataset: 'vecs', externalId: '\u0000' }],
      ['DeleteItem', { dataset: 'vecs', externalId: 'x\u0000y' }],
      ['CreateDataset', { name: 'n\u0000', dimension: 4 }],
      ['CreateApiKey', { name: 'k\u0000', scopes: ['read'] }],
      ['GetJob', { id: '\u0000' }],
    ];
    for (const [method, req] of calls) {
      const failure = await admin.fails(method, req);
      expect({ method, code: failure.code, errorCode: failure.errorCode }).toEqual({ method, code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_CHARACTERS' });
    }
    const select = await admin.streamFails('Select', { dataset: 'vecs\u0000', order: 'ORDER_HARDEST', fraction: 0.5 });
    expect(select).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_CHARACTERS' });
    const ingest = await admin.ingestFails([{ dataset: 'vecs', items: [{ externalId: 'nul\u0000', embedding: [1, 0, 0, 0] }] }]);
    expect(ingest).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_CHARACTERS' });
    // NUL inside metadata JSON fails that item; a stream of nothing usable is INVALID_ARGUMENT.
    const metadata = await admin.ingestFails([{ dataset: 'vecs', items: [{ externalId: 'm', embedding: [1, 0, 0, 0], metadataJson: '{"a":"\\u0000"}' }] }]);
    expect(metadata).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_CHARACTERS' });
    expect(metadata.errorDetails!.items).toEqual([expect.objectContaining({ externalId: 'm', code: 'INVALID_CHARACTERS' })]);
    await stillServing();
  });

  it('refuses embedding values that are not finite float32, over both encodings', async () => {
    const viaFloats = await admin.ingestFails([{ dataset: 'vecs', items: [{ externalId: 'inf', embedding: [1e39, 0, 0, 0] }] }]);
    expect(viaFloats).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'NON_FINITE_VALUE' });
    const viaBytes = await admin.ingestFails([{ dataset: 'vecs', items: [{ externalId: 'nan', embeddingF32le: f32le([Number.NaN, 1, 0, 0]) }] }]);
    expect(viaBytes).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'NON_FINITE_VALUE' });
  });

  /** One raw HTTP/2 gRPC call; resolves with the trailers' status and error code. */
  function rawCall(headers: Record<string, string>, frame: Buffer): Promise<{ status: number; code: string | undefined }> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${h.service.grpc.port}`);
      session.on('error', reject);
      const stream = session.request({
        ':method': 'POST',
        ':path': '/protoprune.v1.Protoprune/GetDataset',
        'content-type': 'application/grpc',
        te: 'trailers',
        authorization: `Bearer ${h.keys.admin}`,
        ...headers,
      });
      let answer: http2.IncomingHttpHeaders = {};
      stream.on('response', (head) => (answer = head));
      stream.on('trailers', (trailers) => (answer = { ...answer, ...trailers }));
      stream.on('data', () => undefined);
      stream.on('close', () => {
        session.close();
        resolve({ status: Number(answer['grpc-status']), code: answer['error-code'] as string | undefined });
      });
      stream.end(frame);
    });
  }

  it('answers what grpc-js refuses itself (a frame that does not decompress, an unparsable grpc-timeout) with INVALID_ARGUMENT', async () => {
    const message = Buffer.from([0x0a, 0x01, 0x61]);
    const plain = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
    const notGzip = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad]);
    const compressed = Buffer.concat([Buffer.from([1, 0, 0, 0, notGzip.length]), notGzip]);
    expect(await rawCall({ 'grpc-encoding': 'gzip' }, compressed)).toEqual({ status: grpc.status.INVALID_ARGUMENT, code: 'MALFORMED_MESSAGE' });
    for (const timeout of ['abc', '1x', 'S']) {
      expect(await rawCall({ 'grpc-timeout': timeout }, plain)).toEqual({ status: grpc.status.INVALID_ARGUMENT, code: 'INVALID_TIMEOUT' });
    }
    // A well-formed raw call still reaches the handler.
    expect(await rawCall({}, plain)).toEqual({ status: grpc.status.NOT_FOUND, code: 'DATASET_NOT_FOUND' });
    await stillServing();
  });

  it('answers a message that is not protobuf with INVALID_ARGUMENT MALFORMED_MESSAGE, not INTERNAL', async () => {
    // Invalid wire types and a truncated varint.
    const garbage = [Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from([0x08, 0xff]), Buffer.from([0x0b])];
    for (const [i, bytes] of garbage.entries()) {
      for (const method of ['GetDataset', 'CreateApiKey', 'ScoreBatch']) {
        const failure = await new Promise<CallFailure>((resolve, reject) => {
          const metadata = new grpc.Metadata();
          metadata.set('authorization', `Bearer ${h.keys.admin}`);
          admin.raw.makeUnaryRequest(
            `/protoprune.v1.Protoprune/${method}`,
            (b: Buffer) => b,
            (b: Buffer) => b,
            bytes,
            metadata,
            (error: grpc.ServiceError | null) =>
              error
                ? resolve({ code: error.code, details: error.details, errorCode: error.metadata.get('error-code')[0] as string, errorDetails: undefined, metadata: error.metadata })
                : reject(new Error(`${method} accepted garbage ${i}`)),
          );
        });
        expect({ method, i, code: failure.code, errorCode: failure.errorCode }).toEqual({ method, i, code: grpc.status.INVALID_ARGUMENT, errorCode: 'MALFORMED_MESSAGE' });
      }
    }
    await stillServing();
  });
});
