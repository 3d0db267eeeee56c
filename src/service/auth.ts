import { createHash, randomBytes } from 'node:crypto';
import type { Database } from '../store/database.js';
import { findApiKeyByHash, findApiKeyById, insertApiKey, insertFirstApiKey, listApiKeys as listKeyRows, revokeApiKey as revokeKeyRow, touchApiKey, type ApiKeyRow } from '../store/api-keys.js';
import { isUuid } from '../store/datasets.js';
import { printable } from './text.js';
import { ServiceError } from './errors.js';
import { DATASET_NAME_PATTERN, KEY_MAX_DATASETS, KEY_NAME_MAX_LENGTH } from './limits.js';

/** `admin` implies `write`, which implies `read`. */
export const SCOPES = ['read', 'write', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Who is calling: an API key, or everyone when auth is disabled by configuration. */
export interface Principal {
  keyId: string | null;
  name: string;
  scopes: Scope[];
  /** Dataset names this caller may touch; empty means every dataset. */
  datasets: string[];
}

/** The caller when `AUTH_DISABLED=true`: allowed everything. */
export const UNAUTHENTICATED_ADMIN: Principal = { keyId: null, name: 'auth-disabled', scopes: ['admin'], datasets: [] };

/** Whoever runs the service or its CLI on the database itself (first-boot key, `npm run keys`): an unrestricted admin. */
export const OPERATOR: Principal = { keyId: null, name: 'operator', scopes: ['admin'], datasets: [] };

const KEY_PREFIX = 'pp_';
/** Writing last_used_at on every request would turn reads into writes; once a minute is enough. */
const TOUCH_INTERVAL_MS = 60_000;

/** When this process last wrote each key's last_used_at (one per service container). */
export class KeyTouches {
  private readonly lastTouched = new Map<string, number>();

  /** Whether key `id`'s use is to be written now (at most once per TOUCH_INTERVAL_MS); records it if so. */
  due(id: string, now: number): boolean {
    if (now - (this.lastTouched.get(id) ?? 0) <= TOUCH_INTERVAL_MS) return false;
    // Keys revoked or unused for an interval need no entry: without one their next use is written.
    if (this.lastTouched.size > 10_000) for (const [k, t] of this.lastTouched) if (now - t > TOUCH_INTERVAL_MS) this.lastTouched.delete(k);
    this.lastTouched.set(id, now);
    return true;
  }
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export interface ApiKeyView {
  id: string;
  name: string;
  scopes: Scope[];
  datasets: string[];
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

function view(row: ApiKeyRow): ApiKeyView {
  return { ...row, scopes: row.scopes as Scope[] };
}

export interface MintKeyInput {
  name: string;
  scopes: readonly string[];
  datasets?: readonly string[];
}

const DATASET_NAME = new RegExp(DATASET_NAME_PATTERN);

function highestRank(scopes: readonly string[]): number {
  return Math.max(-1, ...scopes.map((s) => SCOPES.indexOf(s as Scope)));
}

/**
 * A key is within a caller's reach when none of its scopes is above the caller's highest and,
 * for a caller limited to datasets, when it is limited to a non-empty subset of them. Keys can
 * only be minted, listed and revoked within reach, so no key can widen itself: a key limited to
 * datasets can never produce, see or revoke an unrestricted key.
 */
export function withinReach(caller: Principal, key: { scopes: readonly string[]; datasets: readonly string[] }): boolean {
  if (highestRank(key.scopes) > highestRank(caller.scopes)) return false;
  if (caller.datasets.length === 0) return true;
  return key.datasets.length > 0 && key.datasets.every((d) => caller.datasets.includes(d));
}

/** Creates a key within the caller's reach; the secret is returned once and only its SHA-256 is stored. */
export async function mintApiKey(db: Database, input: MintKeyInput, caller: Principal): Promise<ApiKeyView & { secret: string }> {
  const name = input.name.trim();
  if (name.length === 0 || name.length > KEY_NAME_MAX_LENGTH) {
    throw new ServiceError('invalid', 'INVALID_NAME', `key name must be 1-${KEY_NAME_MAX_LENGTH} characters`, { field: 'name' });
  }
  if (input.scopes.length === 0) throw new ServiceError('invalid', 'INVALID_SCOPES', `give at least one scope of ${SCOPES.join(', ')}`, { field: 'scopes' });
  for (const scope of input.scopes) {
    if (!(SCOPES as readonly string[]).includes(scope)) {
      throw new ServiceError('invalid', 'INVALID_SCOPES', `unknown scope ${scope}; scopes are ${SCOPES.join(', ')}`, { field: 'scopes' });
    }
  }
  const datasets = [...new Set(input.datasets ?? [])];
  if (datasets.length > KEY_MAX_DATASETS) {
    throw new ServiceError('invalid', 'INVALID_DATASETS', `a key may be limited to at most ${KEY_MAX_DATASETS} datasets`, { field: 'datasets' });
  }
  const badName = datasets.find((d) => !DATASET_NAME.test(d));
  if (badName !== undefined) throw new ServiceError('invalid', 'INVALID_DATASETS', 'datasets must be dataset names', { field: 'datasets' });
  const key = { scopes: [...new Set(input.scopes)], datasets };
  if (!withinReach(caller, key)) {
    throw new ServiceError(
      'forbidden',
      'KEY_EXCEEDS_CALLER',
      caller.datasets.length > 0
        ? `this API key may only mint keys limited to some of its own datasets (${caller.datasets.join(', ')}) and scopes`
        : 'this API key may not mint a key with a higher scope than its own',
      { field: key.datasets.length === 0 && caller.datasets.length > 0 ? 'datasets' : 'scopes', granted: { scopes: caller.scopes, datasets: caller.datasets } },
    );
  }
  const secret = newSecret();
  const row = await insertApiKey(db, { name, keyHash: hashSecret(secret), ...key });
  return { ...view(row), secret };
}

const newSecret = () => KEY_PREFIX + randomBytes(24).toString('base64url');

/**
 * Mints the unrestricted admin key a fresh installation starts with — only if no key was ever
 * minted, checked and inserted atomically across every process on the database (undefined when
 * one existed, e.g. minted a moment ago by another replica booting at the same time).
 */
export async function mintInitialAdminKey(db: Database): Promise<(ApiKeyView & { secret: string }) | undefined> {
  const secret = newSecret();
  const row = await insertFirstApiKey(db, { name: 'initial-admin', keyHash: hashSecret(secret), scopes: ['admin'], datasets: [] });
  return row ? { ...view(row), secret } : undefined;
}

/** The keys within the caller's reach (every key, for an unrestricted admin). */
export async function listApiKeys(db: Database, caller: Principal): Promise<ApiKeyView[]> {
  return (await listKeyRows(db)).filter((row) => withinReach(caller, row)).map(view);
}

/** Revokes a key within the caller's reach; a key beyond it is refused as if it did not exist (its id reveals nothing). */
export async function revokeApiKey(db: Database, id: string, caller: Principal): Promise<ApiKeyView> {
  const target = isUuid(id) ? await findApiKeyById(db, id) : undefined;
  const row = target && withinReach(caller, target) ? await revokeKeyRow(db, id) : undefined;
  if (!row) throw new ServiceError('not_found', 'API_KEY_NOT_FOUND', `API key ${printable(id, 64)} does not exist`, { id: printable(id, 64) });
  return view(row);
}

/** Throws `forbidden` unless the caller is an admin of every dataset (key administration beyond datasets, /metrics). */
export function authorizeUnrestrictedAdmin(principal: Principal): void {
  authorize(principal, 'admin');
  if (principal.datasets.length > 0) {
    throw new ServiceError('forbidden', 'UNRESTRICTED_ADMIN_REQUIRED', 'this operation needs an admin key that is not limited to datasets', {});
  }
}

/**
 * Resolves the secret a caller presented (the part after `Bearer `) to its key. With auth
 * disabled every caller is an admin; otherwise a missing or unknown/revoked secret is refused.
 */
export async function authenticate(ctx: { authEnabled: boolean; db: Database; keyTouches: KeyTouches }, secret: string | undefined): Promise<Principal> {
  if (!ctx.authEnabled) return UNAUTHENTICATED_ADMIN;
  if (!secret) throw new ServiceError('unauthenticated', 'MISSING_API_KEY', 'send an API key as "Authorization: Bearer <key>"');
  const row = await findApiKeyByHash(ctx.db, hashSecret(secret));
  if (!row) throw new ServiceError('unauthenticated', 'INVALID_API_KEY', 'the API key is unknown or revoked');
  if (ctx.keyTouches.due(row.id, Date.now())) await touchApiKey(ctx.db, row.id);
  return { keyId: row.id, name: row.name, scopes: row.scopes as Scope[], datasets: row.datasets };
}

export function hasScope(principal: Principal, scope: Scope): boolean {
  const rank = SCOPES.indexOf(scope);
  return principal.scopes.some((s) => SCOPES.indexOf(s) >= rank);
}

export function mayAccessDataset(principal: Principal, dataset: string): boolean {
  return principal.datasets.length === 0 || principal.datasets.includes(dataset);
}

/** Throws `forbidden` unless the principal holds `scope` (or a higher one) and, if named, may touch `dataset`. */
export function authorize(principal: Principal, scope: Scope, dataset?: string): void {
  if (!hasScope(principal, scope)) {
    throw new ServiceError('forbidden', 'INSUFFICIENT_SCOPE', `this operation needs the ${scope} scope`, { required: scope, granted: principal.scopes });
  }
  if (dataset !== undefined && !mayAccessDataset(principal, dataset)) {
    throw new ServiceError('forbidden', 'DATASET_FORBIDDEN', `this API key may not access dataset ${dataset}`, { dataset });
  }
}

/** Read access to a job means read access to its dataset; a job whose dataset is gone is visible only to unrestricted keys. */
export function authorizeJob(principal: Principal, job: { dataset: string | null }): void {
  if (job.dataset !== null) return authorize(principal, 'read', job.dataset);
  authorize(principal, 'read');
  if (principal.datasets.length > 0) {
    throw new ServiceError('forbidden', 'DATASET_FORBIDDEN', 'this API key may not access the job of a deleted dataset', {});
  }
}
