import * as grpc from '@grpc/grpc-js';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintApiKey, OPERATOR } from '../../src/service/auth.js';
import { BACKENDS } from '../helpers/backends.js';
import { ApiClient, type CallFailure, type Msg } from '../grpc/client.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

/**
 * Every key-management operation × every kind of key, over REST and gRPC: a key mints, lists and
 * revokes only keys within its reach (scopes no higher than its own; for a key limited to
 * datasets, a non-empty subset of them), and /metrics needs an unrestricted admin.
 */
type Kind = 'admin' | 'adminA' | 'adminAB' | 'write' | 'read' | 'readA' | 'revoked' | 'garbage' | 'none';
const KINDS: Kind[] = ['admin', 'adminA', 'adminAB', 'write', 'read', 'readA', 'revoked', 'garbage', 'none'];

interface Outcome {
  /** HTTP status, or the gRPC status mapped to it for one table. */
  status: number;
  code?: string;
}

const GRPC_TO_HTTP: Partial<Record<grpc.status, number>> = {
  [grpc.status.OK]: 200,
  [grpc.status.INVALID_ARGUMENT]: 400,
  [grpc.status.UNAUTHENTICATED]: 401,
  [grpc.status.PERMISSION_DENIED]: 403,
  [grpc.status.NOT_FOUND]: 404,
};

describe.each(BACKENDS)('API key reach on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpcClient: ApiClient;
  const secrets = {} as Record<Kind, string | undefined>;
  const ids = {} as Record<string, string>;

  async function mint(name: string, scopes: string[], datasets: string[] = []) {
    const key = await mintApiKey(h.service.db, { name, scopes, datasets }, OPERATOR);
    ids[name] = key.id;
    return key.secret;
  }

  beforeAll(async () => {
    h = await startApi(backend);
    http = request(h.service.http.server);
    grpcClient = new ApiClient(h.service.grpc.port, undefined);
    secrets.admin = await mint('admin', ['admin']);
    secrets.adminA = await mint('adminA', ['admin'], ['a']);
    secrets.adminAB = await mint('adminAB', ['admin'], ['a', 'b']);
    secrets.write = await mint('write', ['write']);
    secrets.read = await mint('read', ['read']);
    secrets.readA = await mint('readA', ['read'], ['a']);
    secrets.revoked = await mint('revoked', ['admin']);
    await http.delete(`/v1/keys/${ids.revoked}`).set('authorization', bearer(secrets.admin!)).expect(200);
    secrets.garbage = 'pp_not-a-key';
    secrets.none = undefined;
    for (const name of ['a', 'b']) await http.post('/v1/datasets').set('authorization', bearer(secrets.admin!)).send({ name, dimension: 2 }).expect(201);
  });
  afterAll(async () => {
    grpcClient?.close();
    await h?.close();
  });

  const restAs = (kind: Kind, req: request.Test) => (secrets[kind] === undefined ? req : req.set('authorization', bearer(secrets[kind]!)));

  async function restMint(kind: Kind, body: object): Promise<Outcome & { secret?: string; id?: string }> {
    const res = await restAs(kind, http.post('/v1/keys').send(body));
    return { status: res.status, code: res.body.error?.code, secret: res.body.secret, id: res.body.id };
  }

  async function grpcCall(kind: Kind, method: string, req: Msg): Promise<Outcome & { response?: Msg }> {
    const client = grpcClient.withKey(secrets[kind]);
    try {
      const response = await client.unary(method, req);
      return { status: 200, response };
    } catch (error) {
      const e = error as grpc.ServiceError;
      const failure: Partial<CallFailure> = { errorCode: e.metadata?.get('error-code')[0] as string | undefined };
      return { status: GRPC_TO_HTTP[e.code] ?? 500 + e.code, code: failure.errorCode };
    }
  }

  /** What minting `scopes`/`datasets` must answer for each kind of caller. */
  const MINT_CASES: Array<{ scopes: string[]; datasets: string[]; allowed: Kind[] }> = [
    { scopes: ['admin'], datasets: [], allowed: ['admin'] },
    { scopes: ['read'], datasets: [], allowed: ['admin'] },
    { scopes: ['admin'], datasets: ['a'], allowed: ['admin', 'adminA', 'adminAB'] },
    { scopes: ['read'], datasets: ['a'], allowed: ['admin', 'adminA', 'adminAB'] },
    { scopes: ['read'], datasets: ['b'], allowed: ['admin', 'adminAB'] },
    { scopes: ['write'], datasets: ['a', 'b'], allowed: ['admin', 'adminAB'] },
    { scopes: ['read'], datasets: ['c'], allowed: ['admin'] },
  ];

  function expectedRefusal(kind: Kind): Outcome {
    if (kind === 'revoked' || kind === 'garbage') return { status: 401, code: 'INVALID_API_KEY' };
    if (kind === 'none') return { status: 401, code: 'MISSING_API_KEY' };
    if (kind === 'write' || kind === 'read' || kind === 'readA') return { status: 403, code: 'INSUFFICIENT_SCOPE' };
    return { status: 403, code: 'KEY_EXCEEDS_CALLER' };
  }

  it.each(['rest', 'grpc'] as const)('mints only keys within the caller’s reach (%s)', async (transport) => {
    for (const { scopes, datasets, allowed } of MINT_CASES) {
      for (const kind of KINDS) {
        const body = { name: `minted-by-${kind}`, scopes, datasets };
        const outcome = transport === 'rest' ? await restMint(kind, body) : await grpcCall(kind, 'CreateApiKey', body);
        const label = `${transport} ${kind} mints ${scopes}/${datasets.join('+') || 'all'}`;
        if (allowed.includes(kind)) expect({ label, status: outcome.status }).toEqual({ label, status: transport === 'rest' ? 201 : 200 });
        else expect({ label, ...outcome, response: undefined, secret: undefined, id: undefined }).toMatchObject({ label, ...expectedRefusal(kind) });
      }
    }
  });

  it('a key minted within reach reaches no further than its minter', async () => {
    const minted = await restMint('adminA', { name: 'child', scopes: ['admin'], datasets: ['a'] });
    expect(minted.status).toBe(201);
    const child = bearer(minted.secret!);
    await http.get('/v1/datasets/a').set('authorization', child).expect(200);
    expect((await http.get('/v1/datasets/b').set('authorization', child)).body.error.code).toBe('DATASET_FORBIDDEN');
    expect((await http.get('/v1/datasets').set('authorization', child).expect(200)).body.datasets.map((d: { name: string }) => d.name)).toEqual(['a']);
    const grandchild = await http.post('/v1/keys').set('authorization', child).send({ name: 'grandchild', scopes: ['admin'] });
    expect(grandchild.status).toBe(403);
  });

  it.each(['rest', 'grpc'] as const)('lists only keys within the caller’s reach (%s)', async (transport) => {
    const listed = async (kind: Kind): Promise<Outcome & { names?: string[] }> => {
      if (transport === 'rest') {
        const res = await restAs(kind, http.get('/v1/keys'));
        return { status: res.status, code: res.body.error?.code, names: res.body.keys?.map((k: { name: string }) => k.name) };
      }
      const outcome = await grpcCall(kind, 'ListApiKeys', {});
      return { ...outcome, names: outcome.response?.keys.map((k: { name: string }) => k.name) };
    };
    const all = await listed('admin');
    expect(all.names).toEqual(expect.arrayContaining(['admin', 'adminA', 'adminAB', 'write', 'read', 'readA', 'revoked']));
    const limitedA = await listed('adminA');
    expect(limitedA.status).toBe(200);
    expect(limitedA.names!.length).toBeGreaterThan(0);
    expect(limitedA.names).toContain('readA');
    expect(limitedA.names).not.toContain('admin');
    expect(limitedA.names).not.toContain('adminAB');
    expect(limitedA.names).not.toContain('read');
    const limitedAB = await listed('adminAB');
    expect(limitedAB.names).toEqual(expect.arrayContaining(['adminA', 'adminAB', 'readA']));
    expect(limitedAB.names).not.toContain('admin');
    for (const kind of ['write', 'read', 'readA', 'revoked', 'garbage', 'none'] as const) {
      const outcome = await listed(kind);
      expect({ kind, status: outcome.status, code: outcome.code }).toEqual({ kind, ...(kind === 'write' || kind.startsWith('read') ? { status: 403, code: 'INSUFFICIENT_SCOPE' } : expectedRefusal(kind)) });
    }
  });

  it.each(['rest', 'grpc'] as const)('revokes only keys within the caller’s reach (%s)', async (transport) => {
    const revoke = async (kind: Kind, id: string): Promise<Outcome> => {
      if (transport === 'rest') {
        const res = await restAs(kind, http.delete(`/v1/keys/${id}`));
        return { status: res.status, code: res.body.error?.code };
      }
      return grpcCall(kind, 'RevokeApiKey', { id });
    };
    const victims = {
      unrestricted: await mint(`victim-all-${transport}`, ['read']),
      onlyB: await mint(`victim-b-${transport}`, ['read'], ['b']),
      onlyA: await mint(`victim-a-${transport}`, ['read'], ['a']),
    };
    const id = (which: keyof typeof victims) => ids[`victim-${which === 'unrestricted' ? 'all' : which === 'onlyA' ? 'a' : 'b'}-${transport}`];
    // Beyond reach: as if it did not exist, and the key keeps working.
    expect(await revoke('adminA', id('unrestricted'))).toEqual({ status: 404, code: 'API_KEY_NOT_FOUND' });
    expect(await revoke('adminA', id('onlyB'))).toEqual({ status: 404, code: 'API_KEY_NOT_FOUND' });
    expect(await revoke('adminA', ids.admin)).toEqual({ status: 404, code: 'API_KEY_NOT_FOUND' });
    await http.get('/v1/datasets').set('authorization', bearer(victims.unrestricted)).expect(200);
    await http.get('/v1/datasets').set('authorization', bearer(secrets.admin!)).expect(200);
    for (const kind of ['write', 'read', 'readA', 'garbage', 'none'] as const) {
      const outcome = await revoke(kind, id('onlyA'));
      expect({ kind, ...outcome }).toEqual({ kind, ...(kind === 'garbage' || kind === 'none' ? expectedRefusal(kind) : { status: 403, code: 'INSUFFICIENT_SCOPE' }) });
    }
    // Within reach.
    expect((await revoke('adminA', id('onlyA'))).status).toBe(200);
    expect((await http.get('/v1/datasets').set('authorization', bearer(victims.onlyA))).status).toBe(401);
    expect((await revoke('adminAB', id('onlyB'))).status).toBe(200);
    expect((await revoke('admin', id('unrestricted'))).status).toBe(200);
    expect((await http.get('/v1/datasets').set('authorization', bearer(victims.unrestricted))).status).toBe(401);
  });

  it('serves /metrics only to an unrestricted admin', async () => {
    const expected: Record<Kind, Outcome> = {
      admin: { status: 200 },
      adminA: { status: 403, code: 'UNRESTRICTED_ADMIN_REQUIRED' },
      adminAB: { status: 403, code: 'UNRESTRICTED_ADMIN_REQUIRED' },
      write: { status: 403, code: 'INSUFFICIENT_SCOPE' },
      read: { status: 403, code: 'INSUFFICIENT_SCOPE' },
      readA: { status: 403, code: 'INSUFFICIENT_SCOPE' },
      revoked: expectedRefusal('revoked'),
      garbage: expectedRefusal('garbage'),
      none: expectedRefusal('none'),
    };
    for (const kind of KINDS) {
      const res = await restAs(kind, http.get('/metrics'));
      expect({ kind, status: res.status, code: res.body?.error?.code }).toEqual({ kind, ...expected[kind] });
    }
  });
});
