import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { listApiKeys, mintApiKey, revokeApiKey, type ApiKeyView } from '../../../service/auth.js';
import type { ServiceContext } from '../../../service/context.js';
import { ErrorBody } from '../../schemas.js';
import { ApiKey, ApiKeyList, CreateKeyBody, KeyParams, MintedKey } from './schemas.js';

function keyBody(key: ApiKeyView) {
  return { ...key, createdAt: key.createdAt.toISOString(), lastUsedAt: key.lastUsedAt?.toISOString() ?? null, revokedAt: key.revokedAt?.toISOString() ?? null };
}

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

/** API key administration (admin scope). */
export const keyRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext }> = async (app, { ctx }) => {
  app.post(
    '/keys',
    { config: { scope: 'admin' }, schema: { operationId: 'createApiKey', summary: 'Mint an API key; its secret is in this response only', tags: ['keys'], body: CreateKeyBody, response: { 201: MintedKey, ...errors } } },
    async (request, reply) => {
      const key = await mintApiKey(ctx.db, request.body, request.principal!);
      return reply.status(201).send({ ...keyBody(key), secret: key.secret });
    },
  );

  app.get(
    '/keys',
    { config: { scope: 'admin' }, schema: { operationId: 'listApiKeys', summary: 'List API keys (never their secrets)', tags: ['keys'], response: { 200: ApiKeyList, ...errors } } },
    async (request) => ({ keys: (await listApiKeys(ctx.db, request.principal!)).map(keyBody) }),
  );

  app.delete(
    '/keys/:id',
    { config: { scope: 'admin' }, schema: { operationId: 'revokeApiKey', summary: 'Revoke an API key', tags: ['keys'], params: KeyParams, response: { 200: ApiKey, ...errors } } },
    async (request) => keyBody(await revokeApiKey(ctx.db, request.params.id, request.principal!)),
  );
};
